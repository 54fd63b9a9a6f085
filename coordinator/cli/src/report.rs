//! `advsweep report SWEEP`: tables, exports and figures for a sweep, at any moment of it.

use std::path::PathBuf;
use std::process::ExitCode;

use super::{BadInput, connection};
use advsweep_coordinator::grpc::rows;
use advsweep_report::{self as report, Layout};

#[derive(Debug, Clone, clap::Args)]
pub struct ReportArgs {
    /// A sweep id or name (the newest sweep of that name).
    pub sweep: String,
    /// Output directory (default: reports/<sweep name>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Dimensions along the table's rows (attack, epsilon, model, defense, defense_epsilon,
    /// seed). Entries average seeds only: a dimension the cells differ in that is on neither
    /// axis is added to the rows.
    #[arg(long, default_value = "attack,epsilon")]
    pub rows: String,
    /// Dimensions along the table's columns.
    #[arg(long, default_value = "model,defense")]
    pub cols: String,
    /// The value in the table: accuracy, attack_success_rate, mean_linf, mean_l2, seconds,
    /// images_per_second.
    #[arg(long, default_value = "accuracy")]
    pub metric: String,
    /// Tables and exports only.
    #[arg(long)]
    pub no_plots: bool,
    /// The figures' size in inches, WIDTHxHEIGHT (default 9x5).
    #[arg(long, value_name = "WxH")]
    pub figure_size: Option<String>,
    /// The PNG figures' resolution in dots per inch (default 150; SVGs are vector).
    #[arg(long)]
    pub dpi: Option<u32>,
    /// Read this state directory instead of asking a coordinator (works with none running;
    /// without a coordinator, ./advsweep-state is read when it exists).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    #[command(flatten)]
    pub target: connection::Target,
}

pub fn layout(rows: &str, cols: &str, metric: &str) -> Result<Layout, BadInput> {
    Layout::parse(rows, cols, metric)
        .map_err(|why| BadInput(format!("--rows/--cols/--metric: {why}")))
}

pub async fn report(args: ReportArgs) -> anyhow::Result<ExitCode> {
    let layout = layout(&args.rows, &args.cols, &args.metric)?;
    let canvas =
        report::plots::Canvas::parse(args.figure_size.as_deref(), args.dpi).map_err(BadInput)?;
    let mut sweeps = super::source::Sweeps::open(&args.target, args.state_dir.as_deref()).await?;
    let detail = sweeps.detail(&args.sweep).await?;
    let r = rows::sweep_report(&detail)?;
    let out = args
        .out
        .unwrap_or_else(|| PathBuf::from("reports").join(report::plots::slug(&r.name)));
    let written = report::write(&r, &out, &layout, (!args.no_plots).then_some(canvas))
        .map_err(|e| anyhow::anyhow!("cannot write the report into {}: {e}", out.display()))?;
    out!("{}", report::Pivot::new(&r.cells, layout).shown());
    outln!();
    outln!("wrote {} files into {}", written.files.len(), out.display());
    if let Some(why) = written.plots_skipped {
        errln!("advsweep: plots skipped: {why}");
    }
    Ok(ExitCode::SUCCESS)
}
