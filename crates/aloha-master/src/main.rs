use clap::Parser;

#[tokio::main]
async fn main() {
    let cfg = match aloha_master::config::Args::parse().into_config() {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("aloha-master: {e}");
            std::process::exit(2);
        }
    };
    aloha_master::init_logging(&cfg.log);
    if let Err(e) = aloha_master::run(cfg).await {
        eprintln!("aloha-master: {e:#}");
        std::process::exit(1);
    }
}
