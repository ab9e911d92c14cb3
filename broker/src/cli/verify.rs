//! `strata verify DATA_DIR`: checks a stopped broker's data directory —
//! every batch's CRC, offset continuity, every index, every topic's
//! metadata — changes nothing, prints a report and exits non-zero on any
//! problem. Refuses while a broker holds the directory.

use std::fs;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use strata::log::format::{parse_segment_file_name, segment_paths, TOPICS_DIR, TOPIC_META_FILE};
use strata::log::verify::{check_offset_index, check_time_index, scan_segment, Problem};

use super::CliError;

#[derive(clap::Args)]
pub struct VerifyArgs {
    /// The broker's data directory (storage.data_dir).
    data_dir: PathBuf,
}

#[derive(Default)]
struct Totals {
    partitions: usize,
    segments: usize,
    batches: usize,
    records: u64,
    problems: usize,
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, CliError> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("reading {}: {e}", path.display()).into()),
    }
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, CliError> {
    let mut out: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|e| format!("listing {}: {e}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    out.sort();
    Ok(out)
}

fn verify_partition(dir: &Path, totals: &mut Totals) -> Result<(), CliError> {
    let mut bases: Vec<u64> =
        sorted_entries(dir)?.iter().filter_map(|p| p.file_name()?.to_str().and_then(parse_segment_file_name)).collect();
    bases.sort_unstable();
    totals.partitions += 1;
    let mut expected = None;
    for (i, &base) in bases.iter().enumerate() {
        let [log, index, time] = segment_paths(dir, base);
        let data = fs::read(&log).map_err(|e| format!("reading {}: {e}", log.display()))?;
        let last = i + 1 == bases.len();
        let read = |pos: u64, len: usize| Ok(Bytes::copy_from_slice(&data[pos as usize..pos as usize + len]));
        let report = scan_segment(base, data.len() as u64, last, read, |_| Ok(()))?;
        let mut problems = report.problems.clone();
        if expected.is_some_and(|e| base < e) {
            problems.push(Problem::Index {
                which: "segment name",
                reason: format!("base {base} is below the previous segment's end {}", expected.unwrap_or(0)),
            });
        }
        problems.extend(check_offset_index(base, read_optional(&index)?.as_deref(), &report));
        problems.extend(check_time_index(base, read_optional(&time)?.as_deref(), &report));
        expected = Some(report.next_offset);
        totals.segments += 1;
        totals.batches += report.batches.len();
        totals.records += report.records;
        totals.problems += problems.len();
        let status = if problems.is_empty() { "ok" } else { "DAMAGED" };
        println!(
            "{status}  {}: {} batches, {} records, offsets {base}..{}",
            log.display(),
            report.batches.len(),
            report.records,
            report.next_offset
        );
        for p in problems {
            println!("        {p}");
        }
    }
    Ok(())
}

pub fn run(args: VerifyArgs) -> Result<(), CliError> {
    if !args.data_dir.is_dir() {
        return Err(format!("{} is not a directory", args.data_dir.display()).into());
    }
    // Held for the whole check: no broker may start on it meanwhile.
    let _lock = strata::partition::lock::lock_data_dir(&args.data_dir)?;
    let mut totals = Totals::default();
    let topics = args.data_dir.join(TOPICS_DIR);
    for topic in sorted_entries(&topics)?.into_iter().filter(|p| p.is_dir()) {
        let name = topic.file_name().unwrap_or_default().to_string_lossy().into_owned();
        if name.starts_with('~') {
            println!("note  {}: an unfinished topic creation or deletion (start-up removes it)", topic.display());
            continue;
        }
        if !topic.join(TOPIC_META_FILE).is_file() {
            println!("DAMAGED  {}: no {TOPIC_META_FILE} (the broker refuses to start)", topic.display());
            totals.problems += 1;
        } else {
            let (problems, notes) = strata::partition::verify_topic_dir(&topic);
            let status = if problems.is_empty() { "ok" } else { "DAMAGED" };
            println!("{status}  {}", topic.join(TOPIC_META_FILE).display());
            for p in &problems {
                println!("        {p} (the broker refuses to start)");
            }
            for n in notes {
                println!("        note: {n}");
            }
            totals.problems += problems.len();
        }
        for partition in sorted_entries(&topic)?.into_iter().filter(|p| p.is_dir()) {
            verify_partition(&partition, &mut totals)?;
        }
    }
    let t = &totals;
    println!(
        "{} partitions, {} segments, {} batches, {} records checked; {} problems",
        t.partitions, t.segments, t.batches, t.records, t.problems
    );
    match t.problems {
        0 => Ok(()),
        n => Err(format!("{n} problems found in {}", args.data_dir.display()).into()),
    }
}
