//! Numbers and the report: percentiles, formatting, and `--write`'s section replacement.

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

static BUILD: OnceLock<&'static str> = OnceLock::new();

/// Names the build the daemons come from in the reports ("debug build" unless set).
pub(crate) fn set_build(build: &'static str) {
    let _ = BUILD.set(build);
}

/// Nearest-rank percentile of sorted values (`q` = 0 is the minimum, 1 the maximum).
pub(crate) fn percentile(sorted: &[Duration], q: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

pub(crate) fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 100.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

pub(crate) fn opt_ms(d: Option<Duration>) -> String {
    d.map(ms).unwrap_or_else(|| "—".into())
}

/// Prints the results and, with `write`, replaces the file's section `name` with them.
pub(crate) fn report(
    name: &str,
    command_line: &str,
    table: &str,
    write: Option<&Path>,
) -> Result<(), String> {
    let section = format!(
        "Measured {} with `{command_line}` ({}).\n\n{table}",
        chrono::Utc::now().format("%Y-%m-%d"),
        machine()
    );
    println!("{section}");
    if let Some(path) = write {
        write_section(path, name, &section)?;
        eprintln!("updated the bench:{name} section of {}", path.display());
    }
    Ok(())
}

/// Replaces what lies between the lines `<!-- bench:NAME -->` and `<!-- /bench:NAME -->` in
/// `path`; appends a marked section when the file has none. Only a marker alone on its line
/// counts, so prose may mention the markers.
pub(crate) fn write_section(path: &Path, name: &str, body: &str) -> Result<(), String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let open = format!("<!-- bench:{name} -->");
    let close = format!("<!-- /bench:{name} -->");
    let body = body.trim_end();
    // Byte offsets of the lines that are exactly `marker` (ignoring surrounding blanks).
    let lines_at = |marker: &str| -> Vec<(usize, usize)> {
        let mut at = Vec::new();
        let mut offset = 0;
        for line in text.split_inclusive('\n') {
            if line.trim() == marker {
                at.push((offset, offset + line.len()));
            }
            offset += line.len();
        }
        at
    };
    let new = match (lines_at(&open).as_slice(), lines_at(&close).as_slice()) {
        ([(_, body_start)], [(body_end, _)]) if body_start <= body_end => {
            format!("{}{body}\n{}", &text[..*body_start], &text[*body_end..])
        }
        ([], []) => {
            let sep = if text.is_empty() || text.ends_with("\n\n") {
                ""
            } else if text.ends_with('\n') {
                "\n"
            } else {
                "\n\n"
            };
            format!("{text}{sep}{open}\n{body}\n{close}\n")
        }
        _ => {
            return Err(format!(
                "{}: the lines {open} and {close} must each appear once, in that order",
                path.display()
            ))
        }
    };
    std::fs::write(path, new).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// The machine, briefly: cores, CPU, memory, etcd version, the filesystem under the temp dir.
pub(crate) fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| format!("{:.0} GiB", kb / 1024.0 / 1024.0))
        .unwrap_or_else(|| "unknown memory".into());
    let etcd = std::process::Command::new(aloha_e2e::etcd::etcd_bin())
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(|l| l.replace("etcd Version: ", "etcd "))
        })
        .unwrap_or_else(|| "etcd unknown".into());
    format!(
        "{cores} cores ({cpu}), {mem_gib} RAM, {etcd}, {}, temp dir on {}",
        BUILD.get().copied().unwrap_or("debug build"),
        temp_fs()
    )
}

/// The filesystem type holding the temp dir, from /proc/mounts (the longest matching mount).
pub(crate) fn temp_fs() -> String {
    fs_of(&std::env::temp_dir())
}

/// The filesystem type holding `dir`, with the dir: `ext4 (/tmp)`.
pub(crate) fn fs_of(dir: &std::path::Path) -> String {
    let tmp = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_dev, at, fs) = (f.next()?, f.next()?, f.next()?);
            tmp.starts_with(at).then(|| (at.len(), fs.to_string()))
        })
        .max()
        .map(|(_, fs)| format!("{fs} ({})", tmp.display()))
        .unwrap_or_else(|| format!("unknown ({})", tmp.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<Duration> = (1..=10).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 0.0), Some(Duration::from_millis(1)));
        assert_eq!(percentile(&v, 0.5), Some(Duration::from_millis(5)));
        assert_eq!(percentile(&v, 0.9), Some(Duration::from_millis(9)));
        assert_eq!(percentile(&v, 1.0), Some(Duration::from_millis(10)));
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[test]
    fn a_section_is_replaced_between_its_marker_lines_only() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("b.md");
        let page = "# B\n\nThe `<!-- bench:x -->` markers delimit it.\n\n<!-- bench:x -->\nold\n<!-- /bench:x -->\n\nafter\n";
        std::fs::write(&f, page).unwrap();
        write_section(&f, "x", "new\n").unwrap();
        let want = "# B\n\nThe `<!-- bench:x -->` markers delimit it.\n\n<!-- bench:x -->\nnew\n<!-- /bench:x -->\n\nafter\n";
        assert_eq!(std::fs::read_to_string(&f).unwrap(), want);
        // Rerunning gives the same page; another section is appended.
        write_section(&f, "x", "new").unwrap();
        assert_eq!(std::fs::read_to_string(&f).unwrap(), want);
        write_section(&f, "y", "y1").unwrap();
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(
            text.ends_with("after\n\n<!-- bench:y -->\ny1\n<!-- /bench:y -->\n"),
            "{text}"
        );
        // A marker line twice is refused, and the file is left alone.
        std::fs::write(
            &f,
            "<!-- bench:x -->\n<!-- bench:x -->\n<!-- /bench:x -->\n",
        )
        .unwrap();
        assert!(write_section(&f, "x", "z").is_err());
    }
}
