use clap::Parser;

#[tokio::main]
async fn main() {
    let cfg = match aloha_worker::config::Args::parse().into_config() {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("aloha-worker: {e}");
            std::process::exit(2);
        }
    };
    aloha_worker::init_logging(&cfg.log);
    if let Err(e) = aloha_worker::run(cfg).await {
        eprintln!("aloha-worker: {e:#}");
        std::process::exit(1);
    }
}
