#!/usr/bin/env bash
# Installs the real Spark and Flink the end-to-end tests of the `spark` and `flink` plugins run
# (tests/spark.rs, tests/flink.rs), skipping whatever is already there:
#   - Java (a JRE; `apt-get install openjdk-17-jre-headless` when `java` is missing, as root, and
#     a JDK's javac and jar for the Spark submission test: `openjdk-17-jdk-headless`),
#   - pyspark in one venv (its `bin/spark-submit`, with the Spark jars under site-packages),
#   - apache-flink in another (a whole Flink distribution under site-packages/pyflink: bin/flink,
#     bin/start-cluster.sh, conf/, lib/, examples/).
# The venvs go under ${ALOHA_TOOLS_DIR:-$HOME/.cache/aloha-tools}. Versions are pinned so every
# machine tests the same thing; override with ALOHA_PYSPARK_VERSION / ALOHA_FLINK_VERSION.
#
# Use:   eval "$(scripts/install-spark-flink.sh)"     # installs, then exports the variables
# or     source scripts/install-spark-flink.sh         # the same, from another bash script
# Progress goes to stderr; stdout carries only the `export` lines.
set -euo pipefail

_aloha_tools_main() {
  local tools="${ALOHA_TOOLS_DIR:-$HOME/.cache/aloha-tools}"
  local pyspark_version="${ALOHA_PYSPARK_VERSION:-4.0.1}"
  local flink_version="${ALOHA_FLINK_VERSION:-1.20.3}"
  local python="${ALOHA_PYTHON:-python3}"

  if ! command -v java >/dev/null 2>&1; then
    if [ "$(id -u)" != 0 ]; then
      echo "java is missing: install a JRE 17 (apt-get install -y openjdk-17-jre-headless) or run this as root" >&2
      return 1
    fi
    echo "installing openjdk-17-jre-headless" >&2
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless >&2
  fi
  java -version 2>&1 | head -1 >&2
  # The Spark submission protocol's test compiles a one-class jar: javac and jar (a JDK).
  if ! command -v javac >/dev/null 2>&1 || ! command -v jar >/dev/null 2>&1; then
    if [ "$(id -u)" != 0 ]; then
      echo "javac/jar are missing: install a JDK 17 (apt-get install -y openjdk-17-jdk-headless) or run this as root" >&2
      return 1
    fi
    echo "installing openjdk-17-jdk-headless" >&2
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jdk-headless >&2
  fi

  if ! command -v "$python" >/dev/null 2>&1; then
    echo "$python is missing: install Python 3.9-3.11 with venv and pip" >&2
    return 1
  fi
  mkdir -p "$tools"

  # venv DIR PACKAGE VERSION: a venv in DIR with PACKAGE==VERSION, made anew if it has another.
  _aloha_venv() {
    local dir="$1" package="$2" version="$3"
    if [ -x "$dir/bin/python" ] && [ "$(cat "$dir/.aloha-installed" 2>/dev/null)" = "$package==$version" ]; then
      echo "$package $version already in $dir" >&2
      return 0
    fi
    echo "installing $package $version into $dir (this downloads a few hundred MB)" >&2
    rm -rf "$dir"
    "$python" -m venv "$dir" >&2
    "$dir/bin/python" -m pip install --quiet "$package==$version" >&2
    echo "$package==$version" >"$dir/.aloha-installed"
  }

  local spark_venv="$tools/pyspark-$pyspark_version"
  local flink_venv="$tools/flink-$flink_version"
  _aloha_venv "$spark_venv" pyspark "$pyspark_version"
  _aloha_venv "$flink_venv" apache-flink "$flink_version"

  local spark_home flink_home
  spark_home="$("$spark_venv/bin/python" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')"
  flink_home="$("$flink_venv/bin/python" -c 'import os, pyflink; print(os.path.dirname(pyflink.__file__))')"
  [ -x "$spark_home/bin/spark-submit" ] || { echo "no spark-submit in $spark_home/bin" >&2; return 1; }
  [ -x "$flink_home/bin/flink" ] || { echo "no flink in $flink_home/bin" >&2; return 1; }

  # The pip distributions leave the shell scripts' execute bits as they are; make sure.
  chmod +x "$flink_home"/bin/*.sh "$flink_home"/bin/flink 2>/dev/null || true

  # PYSPARK_PYTHON: the Python that runs .py jobs (spark-submit needs pyspark importable there).
  # The Flink venv's bin goes first on PATH for the tests: pyflink's `flink run -py` runs
  # `python` from PATH, which must be the one with pyflink installed.
  cat <<EOF
export ALOHA_TOOLS_DIR="$tools"
export SPARK_HOME="$spark_home"
export PYSPARK_PYTHON="$spark_venv/bin/python"
export FLINK_HOME="$flink_home"
export ALOHA_FLINK_PYTHON="$flink_venv/bin/python"
export SPARK_LOCAL_IP=127.0.0.1
EOF
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  _aloha_tools_main
else
  # Sourced: install, then export into the caller's shell (a failure fails the caller).
  _aloha_tools_env="$(_aloha_tools_main)" || return 1
  eval "$_aloha_tools_env"
  unset -v _aloha_tools_env
  unset -f _aloha_tools_main _aloha_venv
fi
