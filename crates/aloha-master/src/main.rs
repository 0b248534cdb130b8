use clap::Parser;

#[tokio::main]
async fn main() {
    aloha_daemon::main(
        "aloha-master",
        aloha_master::config::Args::parse().into_config(),
        aloha_master::run,
    )
    .await
}
