//! `--log FILE` and `--log-format`: what the runtime writes besides stderr. containerd's shim
//! reads the last `"level":"error"` line of a JSON log to explain a failure, so each message is
//! one line, appended, with an RFC 3339 `time`.

use std::io::Write;
use std::path::PathBuf;

pub struct Logger {
    file: Option<PathBuf>,
    json: bool,
    debug: bool,
}

impl Logger {
    pub fn new(file: Option<PathBuf>, json: bool, debug: bool) -> Logger {
        Logger { file, json, debug }
    }

    /// An error: always logged.
    pub fn error(&mut self, msg: &str) {
        self.write("error", msg);
    }

    /// A debug line: logged with `--debug`.
    pub fn debug(&mut self, msg: &str) {
        if self.debug {
            self.write("debug", msg);
        }
    }

    fn write(&mut self, level: &str, msg: &str) {
        let Some(path) = &self.file else { return };
        let time = sandbox_image::time::now_rfc3339();
        let line = if self.json {
            serde_json::json!({ "level": level, "msg": msg, "time": time }).to_string()
        } else {
            format!("time={time:?} level={level} msg={msg:?}")
        };
        // The log is the caller's; failing to write it must not change the command's result.
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
            let _ = writeln!(f, "{line}");
        }
    }
}
