use clap::Parser;

#[tokio::main]
async fn main() {
    aloha_daemon::main(
        "aloha-worker",
        aloha_worker::config::Args::parse().into_config(),
        aloha_worker::run,
    )
    .await
}
