pub async fn run(_a: BenchArgs) -> Result<(), super::CliError> { Err("todo".into()) }
#[derive(clap::Args)] pub struct BenchArgs {}
