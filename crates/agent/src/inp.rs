//! Interaction to Next Paint, as web-vitals computes it.
//!
//! Every `event` entry (observed with `durationThreshold: 40`) and `first-input` entry that
//! carries an `interactionId` belongs to an interaction; an interaction's latency is its longest
//! entry's duration. The ten longest interactions are kept. INP is the interaction at index
//! `min(len − 1, ⌊interaction count / 50⌋)` of that list sorted longest first: the worst
//! interaction, skipping one for every 50 interactions (an estimate of the 98th percentile).
//! The interaction count is `performance.interactionCount` where the browser has it, otherwise
//! estimated from the smallest and largest `interactionId` seen (ids step by 7), and counts only
//! interactions since the last back/forward-cache restore. A restored page view with interactions
//! but none at or above the observer's 40 ms threshold reports 8 ms, as web-vitals 6 does (the
//! interactions were fast; reporting none would bias INP upwards).

use crate::host::Js;
use alloc::string::String;
use alloc::vec::Vec;
use pulse_protocol::{Rating, Vital};

use crate::host;
use crate::report::{load_state, selector, Attribution, Instance, Outbox};

/// How many of the longest interactions are kept.
pub const MAX_INTERACTIONS: usize = 10;
/// Step between consecutive `interactionId`s in Chromium (used for the count estimate).
pub const INTERACTION_ID_STEP: u64 = 7;

/// The parts of an `event` / `first-input` entry INP needs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EventTiming {
    pub interaction_id: u64,
    pub start_time: f64,
    pub duration: f64,
    pub processing_start: f64,
    pub processing_end: f64,
}

/// One interaction: its first longest entry (whose interaction id is the interaction's, whose
/// duration is its latency; attribution reads it, and later entries of the same latency change
/// nothing), and the frame it was presented in.
#[derive(Debug, Clone, PartialEq)]
pub struct Interaction {
    pub first: EventTiming,
    frame: Frame,
}

/// The entries presented in one frame, as web-vitals' attribution groups them: render times
/// (`startTime + duration`) within 8 ms of each other; the earliest processing start and the
/// latest processing end (web-vitals' group also keeps the earliest start, which the phases do
/// not read: they count from the interaction's entry).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Frame {
    id: u32,
    render_time: f64,
    processing_start: f64,
    processing_end: f64,
}

/// Frames kept for entries still to come (web-vitals' `MAX_PENDING_FRAMES`).
const MAX_FRAMES: usize = 10;

/// Running INP for one page view.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Inp {
    /// Longest first, at most [`MAX_INTERACTIONS`].
    longest: Vec<Interaction>,
    min_id: Option<u64>,
    max_id: Option<u64>,
    /// The page view is a back/forward-cache restore (or a soft navigation): the interaction count
    /// then (subtracted from the browser's count).
    restored: Option<u64>,
    /// The latest frames, a ring of [`MAX_FRAMES`] by id.
    frames: Vec<Frame>,
    next_frame: u32,
}

/// INP of a restored page view whose interactions were all under the observer's threshold.
pub const FAST_RESTORED_INP_MS: f64 = 8.0;

impl Inp {
    pub fn new() -> Inp {
        Inp::default()
    }

    /// Adds one entry. Entries without an interaction id (`interactionId == 0`) are not
    /// interactions, but count for the frame they were presented in.
    pub fn add(&mut self, entry: EventTiming) {
        let frame = self.frame(&entry);
        if entry.interaction_id == 0 {
            return;
        }
        self.seen(entry.interaction_id);

        if let Some(existing) = self.longest.iter_mut().find(|i| i.first.interaction_id == entry.interaction_id) {
            if entry.duration > existing.first.duration {
                existing.first = entry;
                existing.frame = frame;
            }
        } else if self.longest.len() < MAX_INTERACTIONS || self.longest.last().is_some_and(|min| entry.duration > min.first.duration) {
            self.longest.push(Interaction { first: entry, frame });
        } else {
            return;
        }
        // Keep longest first; among equal latencies the earlier interaction stays first, as in
        // web-vitals. The list is short and only one item moved: an insertion pass, not a sort.
        // Pairs from the end, without indexing (no panic paths in the wasm).
        let mut rest = self.longest.as_mut_slice();
        while let [.., before, last] = rest {
            if last.first.duration > before.first.duration {
                core::mem::swap(before, last);
            }
            let len = rest.len();
            rest = rest.get_mut(..len - 1).unwrap_or_default();
        }
        self.longest.truncate(MAX_INTERACTIONS);
    }

    /// An interaction id seen, for the count estimate (also from the short events web-vitals'
    /// polyfill observes where the browser has no `performance.interactionCount`).
    pub fn seen(&mut self, id: u64) {
        if id > 0 {
            self.min_id = Some(self.min_id.map_or(id, |m| m.min(id)));
            self.max_id = Some(self.max_id.map_or(id, |m| m.max(id)));
        }
    }

    /// The frame `entry` was presented in, updated with it: the latest kept one whose render time
    /// is within 8 ms of the entry's, else a new one. An interaction whose frame it is sees the
    /// update (web-vitals shares the group object).
    fn frame(&mut self, entry: &EventTiming) -> Frame {
        let render_time = entry.start_time + entry.duration;
        // The latest match: the one with the largest id (the frames are a ring by id).
        let mut found: Option<&mut Frame> = None;
        for frame in &mut self.frames {
            if (render_time - frame.render_time).abs() <= 8.0 && found.as_ref().is_none_or(|f| frame.id > f.id) {
                found = Some(frame);
            }
        }
        let frame = match found {
            Some(frame) => {
                frame.processing_start = frame.processing_start.min(entry.processing_start);
                frame.processing_end = frame.processing_end.max(entry.processing_end);
                *frame
            }
            None => {
                let frame = Frame {
                    id: self.next_frame,
                    render_time,
                    processing_start: entry.processing_start,
                    processing_end: entry.processing_end,
                };
                if self.frames.len() < MAX_FRAMES {
                    self.frames.push(frame);
                } else if let Some(oldest) = self.frames.get_mut(self.next_frame as usize % MAX_FRAMES) {
                    *oldest = frame;
                }
                self.next_frame += 1;
                frame
            }
        };
        for interaction in &mut self.longest {
            if interaction.frame.id == frame.id {
                interaction.frame = frame;
            }
        }
        frame
    }

    /// Whether interaction `id` is among the longest kept.
    pub fn contains(&self, id: u64) -> bool {
        self.longest.iter().any(|i| i.first.interaction_id == id)
    }

    /// Interactions counted from the ids seen (for browsers without `performance.interactionCount`).
    pub fn estimated_interaction_count(&self) -> u64 {
        match (self.min_id, self.max_id) {
            (Some(min), Some(max)) => (max - min) / INTERACTION_ID_STEP + 1,
            _ => 0,
        }
    }

    /// The interaction INP reports, given the browser's `performance.interactionCount` if it has one.
    pub fn interaction(&self, browser_count: Option<u64>) -> Option<&Interaction> {
        let count = self.count(browser_count);
        let last = self.longest.len().checked_sub(1)?;
        self.longest.get(last.min((count / 50) as usize))
    }

    /// INP in ms, if any interaction happened.
    pub fn value(&self, browser_count: Option<u64>) -> Option<f64> {
        match self.interaction(browser_count) {
            Some(i) => Some(i.first.duration),
            None => (self.restored.is_some() && self.count(browser_count) > 0).then_some(FAST_RESTORED_INP_MS),
        }
    }

    fn count(&self, browser_count: Option<u64>) -> u64 {
        browser_count.map_or(self.estimated_interaction_count(), |c| c.saturating_sub(self.restored.unwrap_or(0)))
    }

    pub fn rating(value: f64) -> Rating {
        Vital::Inp.thresholds().rate(value)
    }

    /// Starts over after a back/forward-cache restore or a soft navigation; `browser_count` is the
    /// browser's interaction count then. Interactions since, all under the threshold, give
    /// [`FAST_RESTORED_INP_MS`].
    pub fn restart(&mut self, browser_count: Option<u64>) {
        // The frames stay, as web-vitals' groups do.
        self.longest.clear();
        self.min_id = None;
        self.max_id = None;
        self.restored = Some(browser_count.unwrap_or(0));
    }
}

/// The three phases of an interaction's latency (web-vitals attribution).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Phases {
    pub input_delay: f64,
    pub processing_duration: f64,
    pub presentation_delay: f64,
}

impl Interaction {
    /// Splits the latency as web-vitals does, over every event handled in the frame of the first
    /// entry: input delay until the first handler ran (not before the input), processing until
    /// the last handler finished (not after the paint: a sync `alert()`), presentation until the
    /// next paint.
    pub fn phases(&self) -> Phases {
        let first = &self.first;
        let processing_start = self.frame.processing_start.max(first.start_time);
        let next_paint = (first.start_time + first.duration).max(processing_start);
        let processing_end = self.frame.processing_end.min(next_paint);
        Phases {
            input_delay: processing_start - first.start_time,
            processing_duration: processing_end - processing_start,
            presentation_delay: next_paint - processing_end,
        }
    }
}

// ---- In the page: the entries that feed `Inp`, reported on hide. ----

/// Targets remembered per interaction id, for attribution (kept for the longest interactions).
const MAX_TARGETS: usize = 32;

/// INP of the current page view.
#[derive(Debug, Default)]
pub struct Watch {
    inp: Inp,
    instance: Instance,
    /// `(interaction id, target selector, whether the event is a key event)`.
    targets: Vec<(u64, Option<String>, Option<bool>)>,
    /// When the page view started (the restore, the soft navigation; 0 for the load).
    started: f64,
}

impl Watch {
    /// An `event` entry of the count estimate's own observer (any duration from 16 ms).
    pub fn seen(&mut self, entry: Js) {
        self.inp.seen(interaction_id(entry));
    }

    /// An `event` or `first-input` entry.
    pub fn entry(&mut self, entry: Js) {
        let timing = EventTiming {
            interaction_id: interaction_id(entry),
            start_time: host::num(entry, "startTime"),
            duration: host::num(entry, "duration"),
            processing_start: host::num(entry, "processingStart"),
            processing_end: host::num(entry, "processingEnd"),
        };
        if !timing.duration.is_finite() {
            return;
        }
        // Also an entry of no interaction: it counts for its frame.
        self.inp.add(timing);
        let id = timing.interaction_id;
        let Some(interaction) = self.inp.longest.iter().find(|i| i.first.interaction_id == id) else { return };
        // The type is that of the interaction's first longest entry, as web-vitals reports it.
        let first = interaction.first == timing;
        // One item per interaction, its target taken until there is one: the target's selector;
        // once it has left the DOM, the browser's own (web-vitals' fallback).
        if !self.targets.iter().any(|t| t.0 == id) {
            self.targets.push((id, None, None));
        }
        if let Some(item) = self.targets.iter_mut().find(|t| t.0 == id) {
            if item.1.is_none() {
                item.1 = selector(host::get(entry, "target")).or_else(|| host::text(entry, "targetSelector").filter(|s| !s.is_empty()));
            }
            if first {
                item.2 = host::text(entry, "name").map(|n| n.starts_with("key"));
            }
        }
        if self.targets.len() > MAX_TARGETS {
            let inp = &self.inp;
            self.targets.retain(|(i, _, _)| inp.contains(*i));
        }
    }

    /// Reports INP (on hide) if there was an interaction and the value changed since the last report.
    pub fn report(&mut self, out: &mut Outbox) {
        let count = browser_count();
        let Some(value) = self.inp.value(count) else { return };
        let mut attribution = Attribution::default();
        if let Some(interaction) = self.inp.interaction(count) {
            let id = interaction.first.interaction_id;
            let start_time = interaction.first.start_time;
            let (target, key) = self.targets.iter().find(|(t, _, _)| *t == id).map(|(_, t, k)| (t.clone(), *k)).unwrap_or_default();
            let kind = key.map(|key| String::from(if key { "keyboard" } else { "pointer" }));
            attribution.text("interactionTarget", target).text("interactionType", kind).text("loadState", load_state(start_time));
            let p = interaction.phases();
            attribution
                .num("inputDelay", p.input_delay)
                .num("processingDuration", p.processing_duration)
                .num("presentationDelay", p.presentation_delay);
        } else {
            // The small INP of a restored or soft view whose interactions were all fast: no
            // entry, so web-vitals' placeholder split, all of it presentation delay.
            attribution
                .num("inputDelay", 0.0)
                .num("processingDuration", 0.0)
                .num("presentationDelay", value)
                .text("loadState", load_state(self.started));
        }
        self.instance.report(out, Vital::Inp, value, attribution);
    }

    /// After a back/forward-cache restore or a soft navigation at `started`, INP starts over,
    /// counting interactions from there.
    pub fn restart(&mut self, started: f64) {
        self.started = started;
        self.inp.restart(browser_count());
        self.instance = Instance::default();
        self.targets.clear();
    }
}

/// An entry's `interactionId` (0: none).
fn interaction_id(entry: Js) -> u64 {
    let id = host::num(entry, "interactionId");
    if id.is_finite() && id > 0.0 {
        id as u64
    } else {
        0
    }
}

/// `performance.interactionCount`, where the browser has it.
pub fn browser_count() -> Option<u64> {
    let count = host::num(host::PERFORMANCE, "interactionCount");
    count.is_finite().then_some(count as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: u64, duration: f64) -> EventTiming {
        EventTiming { interaction_id: id, start_time: id as f64 * 10.0, duration, processing_start: 0.0, processing_end: 0.0 }
    }

    #[test]
    fn entries_of_one_interaction_merge_and_the_longest_wins() {
        let mut inp = Inp::new();
        inp.add(event(7, 48.0)); // pointerdown
        inp.add(event(7, 120.0)); // click of the same interaction
        inp.add(event(7, 64.0)); // pointerup
        assert_eq!(inp.value(None), Some(120.0));
        assert_eq!(inp.estimated_interaction_count(), 1);
        inp.add(event(0, 500.0)); // no interaction id: a hover, not an interaction
        assert_eq!(inp.value(None), Some(120.0));
    }

    #[test]
    fn with_few_interactions_the_worst_is_reported() {
        let mut inp = Inp::new();
        for (i, d) in [40.0, 300.0, 80.0].into_iter().enumerate() {
            inp.add(event(7 * (i as u64 + 1), d));
        }
        assert_eq!(inp.value(Some(3)), Some(300.0));
        assert_eq!(Inp::rating(300.0), Rating::NeedsImprovement);
    }

    #[test]
    fn one_interaction_is_skipped_per_fifty() {
        let mut inp = Inp::new();
        // 120 interactions with ids 7, 14, …; latencies 1..=120 ms.
        for i in 1..=120u64 {
            inp.add(event(7 * i, i as f64));
        }
        assert_eq!(inp.estimated_interaction_count(), 120);
        // ⌊120 / 50⌋ = 2: the third longest.
        assert_eq!(inp.value(None), Some(118.0));
        // The browser's own count wins when it has one: 49 → index 0.
        assert_eq!(inp.value(Some(49)), Some(120.0));
        // A count beyond 10 × 50 is capped at the tenth longest.
        assert_eq!(inp.value(Some(10_000)), Some(111.0));
    }

    #[test]
    fn only_the_ten_longest_are_kept() {
        let mut inp = Inp::new();
        for i in 1..=30u64 {
            inp.add(event(7 * i, (i % 13) as f64 * 10.0));
        }
        assert_eq!(inp.longest.len(), MAX_INTERACTIONS);
        assert!(inp.longest.windows(2).all(|w| w[0].first.duration >= w[1].first.duration));
        assert_eq!(inp.longest[0].first.duration, 120.0);
    }

    #[test]
    fn restore_starts_over_and_counts_from_there() {
        let mut inp = Inp::new();
        for i in 1..=60u64 {
            inp.add(event(7 * i, 200.0));
        }
        inp.restart(Some(60));
        assert_eq!(inp.value(Some(60)), None, "nothing since the restore");
        assert_eq!(inp.value(Some(62)), Some(FAST_RESTORED_INP_MS), "two interactions, both under the threshold");
        inp.add(event(7 * 63, 90.0));
        assert_eq!(inp.value(Some(63)), Some(90.0), "one interaction over the threshold: index 0");
    }

    #[test]
    fn phases_split_the_latency() {
        let mut inp = Inp::new();
        inp.add(EventTiming {
            interaction_id: 7,
            start_time: 1_000.0,
            duration: 200.0,
            processing_start: 1_030.0,
            processing_end: 1_150.0,
        });
        let phases = |inp: &Inp| inp.interaction(Some(1)).map(Interaction::phases);
        assert_eq!(phases(&inp), Some(Phases { input_delay: 30.0, processing_duration: 120.0, presentation_delay: 50.0 }));
        // A click of the same tap, presented in the same frame but shorter: its handlers count
        // as processing (web-vitals groups a frame's events by render time, within 8 ms).
        inp.add(EventTiming {
            interaction_id: 7,
            start_time: 1_090.0,
            duration: 104.0,
            processing_start: 1_150.0,
            processing_end: 1_180.0,
        });
        assert_eq!(phases(&inp), Some(Phases { input_delay: 30.0, processing_duration: 150.0, presentation_delay: 20.0 }));
        // An event of no interaction in that frame counts too; one presented 9 ms later does not.
        inp.add(EventTiming { interaction_id: 0, start_time: 990.0, duration: 216.0, processing_start: 1_010.0, processing_end: 1_185.0 });
        inp.add(EventTiming { interaction_id: 0, start_time: 990.0, duration: 225.0, processing_start: 1_000.0, processing_end: 1_199.0 });
        assert_eq!(phases(&inp), Some(Phases { input_delay: 10.0, processing_duration: 175.0, presentation_delay: 15.0 }));
    }

    #[test]
    fn short_events_count_for_the_estimate_where_the_browser_has_no_count() {
        // Without performance.interactionCount: 100 interactions, one of them long. Counted only
        // from the long one, INP would be index 0 of one; with every id seen, a restored view's
        // fast interactions also give the 8 ms placeholder.
        let mut inp = Inp::new();
        inp.restart(None);
        for id in 1..=100 {
            inp.seen(id * INTERACTION_ID_STEP);
        }
        inp.seen(0);
        assert_eq!(inp.estimated_interaction_count(), 100);
        assert_eq!(inp.value(None), Some(FAST_RESTORED_INP_MS));
        inp.add(event(7 * 50, 300.0));
        assert_eq!(inp.value(None), Some(300.0));
    }

    #[test]
    fn the_latest_ten_frames_are_kept() {
        let mut inp = Inp::new();
        let at =
            |t: f64| EventTiming { interaction_id: 0, start_time: t, duration: 40.0, processing_start: t + 1.0, processing_end: t + 2.0 };
        for i in 0..25 {
            inp.add(at(f64::from(i) * 100.0));
        }
        let mut kept: Vec<f64> = inp.frames.iter().map(|f| f.processing_start - 1.0).collect();
        kept.sort_by(f64::total_cmp);
        assert_eq!(kept, (15..25).map(|i| f64::from(i) * 100.0).collect::<Vec<_>>());
        assert_eq!(inp.frames.iter().map(|f| f.id).max(), Some(24));
    }

    #[test]
    fn processing_is_clamped_to_the_input_and_the_paint() {
        // A handler still running from before the input, and a sync alert() past the paint.
        let mut inp = Inp::new();
        inp.add(EventTiming { interaction_id: 0, start_time: 900.0, duration: 296.0, processing_start: 950.0, processing_end: 990.0 });
        inp.add(EventTiming {
            interaction_id: 7,
            start_time: 1_000.0,
            duration: 200.0,
            processing_start: 1_010.0,
            processing_end: 1_900.0,
        });
        let phases = inp.interaction(Some(1)).map(Interaction::phases);
        assert_eq!(phases, Some(Phases { input_delay: 0.0, processing_duration: 200.0, presentation_delay: 0.0 }));
    }
}
