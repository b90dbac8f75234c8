//! Stage events on stderr: a human line, or one JSON object per line (`--log-format json`)
//! for schedulers. Chosen once by the front end.

use std::sync::atomic::{AtomicBool, Ordering};

static JSON: AtomicBool = AtomicBool::new(false);

pub fn set_json(json: bool) {
    JSON.store(json, Ordering::Relaxed);
}

pub fn is_json() -> bool {
    JSON.load(Ordering::Relaxed)
}

/// Logs `event` with its `fields` (JSON mode) or `text` (text mode).
pub fn event(event: &str, fields: serde_json::Value, text: impl FnOnce() -> String) {
    if is_json() {
        let mut obj = serde_json::json!({ "event": event });
        if let (Some(o), serde_json::Value::Object(f)) = (obj.as_object_mut(), fields) {
            o.extend(f);
        }
        eprintln!("{obj}");
    } else {
        eprintln!("{}", text());
    }
}
