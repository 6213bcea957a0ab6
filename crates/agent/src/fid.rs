//! First Input Delay: the first `first-input` entry's `processingStart − startTime`, reported
//! once if the input came before the page was first hidden. web-vitals dropped FID for INP in
//! version 5; it is kept here because teams still compare it with older reports.

use crate::host::Js;
use pulse_protocol::Vital;

use crate::host;
use crate::report::{load_state, selector, Attribution, Instance, Outbox, View};

#[derive(Debug, Default)]
pub struct Watch {
    instance: Instance,
}

impl Watch {
    /// A `first-input` entry.
    pub fn entry(&mut self, entry: Js, view: &View, out: &mut Outbox) {
        let start_time = host::num(entry, "startTime");
        if self.instance.reported() || start_time.is_nan() || start_time >= view.first_hidden {
            return;
        }
        let mut attribution = Attribution::default();
        attribution
            .text("eventTarget", selector(host::get(entry, "target")))
            .text("eventType", host::text(entry, "name"))
            .text("loadState", load_state(start_time));
        // Never NaN (`max`), so always reported.
        let value = (host::num(entry, "processingStart") - start_time).max(0.0);
        self.instance.report(out, Vital::Fid, value, attribution);
    }
}
