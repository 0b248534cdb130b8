use clap::Parser;

// The master allocates and frees many small objects per request (records, events, JSON);
// mimalloc serves that faster than glibc's malloc and returns memory to the system sooner.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    aloha_daemon::main(
        "aloha-master",
        aloha_master::config::Args::parse().into_config(),
        aloha_master::run,
    )
    .await
}
