//! What a failed task's `message` says: its reason code first, then what happened, then what
//! to do. `message` is the field the OpenStack clients print (`openstack image task show`,
//! openstacksdk's `Task.message`, `glance task-show`); Sluice's `reason` key is one they do
//! not know.

use super::{
    REASON_CANCELLED, REASON_IMPORT_TIMEOUT, REASON_INTERNAL, REASON_INTERRUPTED,
    REASON_INVALID_INPUT, REASON_STORAGE_FULL,
};

/// The advice for a reason code the table does not name: the inspector's rejections
/// (`backing_file`, `data_file`, `format_mismatch`, …), which all mean the data itself.
const REJECTED_ADVICE: &str = "the image data was refused by format inspection: fix the image, \
                               or declare its real format, then create the task again";

/// What to do after a failure with `reason`.
fn advice(reason: &str) -> &'static str {
    match reason {
        REASON_CANCELLED => "the import's image was deleted; nothing to do",
        REASON_IMPORT_TIMEOUT => {
            "use a faster or nearer source, or ask the operator to raise import_timeout_secs"
        }
        REASON_INTERNAL | "store_error" => {
            "a fault on the service's side: try again later; if it persists, give the operator \
             this task's id"
        }
        REASON_INTERRUPTED => "nothing is wrong with the request: create the task again",
        REASON_INVALID_INPUT => "fix the task's input, then create the task again",
        REASON_STORAGE_FULL => {
            "the service's data volume is full: try again once the operator has freed space"
        }
        "image_changed" => "the image changed meanwhile: check its status before importing again",
        "not_staged" => "stage the data again, then import",
        "quota_exceeded" => {
            "delete images of the project or ask for a larger quota, then create the task again"
        }
        "size_cap" => "the image is larger than the service accepts: ask the operator",
        "source_error" => {
            "check that the URL is right (no typo, a host and address the import rules allow) \
             and reachable from the service, then create the task again"
        }
        "source_too_slow" => {
            "the source sent data too slowly: use a faster or nearer source, then create the \
             task again"
        }
        _ => REJECTED_ADVICE,
    }
}

/// The `message` of a task failed with `reason`: `"{reason}: {what}; {advice}"`. The advice
/// is left out when `what` already says to create the task again or to stage again (the
/// service's own words for those cases are more precise than the table's).
pub fn task_message(reason: &str, what: &str) -> String {
    let prefix = format!("{reason}: ");
    let what = what.strip_prefix(&prefix).unwrap_or(what);
    if what.contains(" again") {
        format!("{prefix}{what}")
    } else {
        format!("{prefix}{what}; {}", advice(reason))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_task_message_starts_with_the_reason_and_advises() {
        let m = task_message("source_error", "HTTP 404 from the source");
        assert!(m.starts_with("source_error: HTTP 404 from the source; check that the URL"));
    }

    #[test]
    fn test_task_message_keeps_the_services_own_advice_and_one_prefix() {
        let what = "import interrupted: the service is shutting down; create the task again";
        let once = task_message(REASON_INTERRUPTED, what);
        assert_eq!(once, format!("interrupted: {what}"));
        assert_eq!(task_message(REASON_INTERRUPTED, &once), once);
    }

    #[test]
    fn test_task_message_rejection_codes_get_the_inspection_advice() {
        let m = task_message("backing_file", "qcow2 image references backing file '/x'");
        assert!(m.starts_with("backing_file: qcow2"), "{m}");
        assert!(m.ends_with(REJECTED_ADVICE), "{m}");
    }
}
