//! Progress bars (indicatif) that cooperate with `tracing` log lines.

use std::io::Write;
use std::sync::OnceLock;

use firmware::train::{EpochLog, Progress};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

fn multi() -> &'static MultiProgress {
    static MP: OnceLock<MultiProgress> = OnceLock::new();
    MP.get_or_init(MultiProgress::new)
}

/// A `tracing` writer that suspends the progress bars while a log line is printed.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        multi().suspend(|| std::io::stderr().write_all(buf))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;
    fn make_writer(&'a self) -> Self::Writer {
        LogWriter
    }
}

/// A bar counting training samples of one run; shows the stage and the last validation accuracy.
#[derive(Debug)]
pub struct Bar {
    bar: ProgressBar,
}

impl Bar {
    /// A bar of `total` samples labelled `label` (hidden automatically when stderr is not a terminal).
    pub fn new(label: &str, total: u64) -> Self {
        let bar = multi().add(ProgressBar::new(total));
        let style = ProgressStyle::with_template("{prefix:>24} [{bar:30}] {percent:>3}% {elapsed_precise} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(label.to_string());
        Self { bar }
    }

    /// Mark the bar done and remove it.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Progress for Bar {
    fn epoch(&mut self, stage: &str, epoch: usize, info: &EpochLog) {
        self.bar.set_message(format!("{stage} epoch {} val acc {:.3}", epoch + 1, info.val_acc));
    }
    fn batch(&mut self, samples: usize) {
        self.bar.inc(samples as u64);
    }
}
