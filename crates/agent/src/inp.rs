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
//!
//! Where the browser has Long Animation Frames (Chromium), the attribution also says what the
//! main thread did between the input and the paint, as web-vitals' attribution build does (its
//! `attributeLoAFDetails`): the `long-animation-frame` entries that overlap the interaction, from
//! its start to the end of its frame's processing ([`LongFrame`], [`Inp::long_frames_of`]), give
//! the time in scripts, in style and layout, in painting and unattributed, and the longest script.

use crate::host::{Js, Kept};
use alloc::string::String;
use alloc::vec::Vec;
use pulse_protocol::text::pieces;
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
/// (`startTime + duration`) within 8 ms of each other; the earliest start (which only decides the
/// long animation frames kept: the phases count from the interaction's entry), the earliest
/// processing start and the latest processing end.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Frame {
    id: u32,
    render_time: f64,
    start_time: f64,
    processing_start: f64,
    processing_end: f64,
}

/// Frames kept for entries still to come (web-vitals' `MAX_PENDING_FRAMES`).
const MAX_FRAMES: usize = 10;

/// Running INP for one page view.
#[derive(Debug, Default, PartialEq)]
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
    /// The latest `processingEnd` of any entry (web-vitals' `latestProcessingEnd`).
    latest_processing_end: f64,
    /// Long animation frames that may still overlap an interaction reported, in the order the
    /// browser delivered them (web-vitals' `pendingLoAFs`).
    long_frames: Vec<LongFrame>,
}

/// A `long-animation-frame` entry, as INP's attribution reads it. Its scripts are read from the
/// entry, which the page keeps while the frame is, only for the interaction reported.
#[derive(Debug, PartialEq)]
pub struct LongFrame {
    pub start_time: f64,
    pub duration: f64,
    pub style_and_layout_start: f64,
    pub entry: Option<Kept>,
    /// Kept by the latest clean-up.
    kept: bool,
}

impl LongFrame {
    pub fn new(start_time: f64, duration: f64, style_and_layout_start: f64, entry: Option<Kept>) -> LongFrame {
        LongFrame { start_time, duration, style_and_layout_start, entry, kept: true }
    }

    fn end(&self) -> f64 {
        self.start_time + self.duration
    }
}

/// A script of a long animation frame (a `PerformanceScriptTiming`), its times.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScriptTiming {
    pub start_time: f64,
    pub duration: f64,
    pub forced_style_and_layout_duration: f64,
}

/// Where an interaction's time went, from the long animation frames that overlap it (web-vitals'
/// `totalScriptDuration` and the rest, and `longestScript`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameTotals {
    pub script: f64,
    pub style_and_layout: f64,
    pub paint: f64,
    pub unattributed: f64,
    pub longest_script: Option<LongestScript>,
}

/// The script that overlapped the interaction longest: its frame (an index in the long frames
/// kept), its index in the frame's scripts, the phase it started in and how long it overlapped.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LongestScript {
    pub frame: usize,
    pub index: usize,
    pub subpart: &'static str,
    pub intersecting_duration: f64,
}

/// Long animation frames kept beyond those overlapping a frame kept (web-vitals'
/// `MAX_PENDING_FRAMES` again): the latest, if they started after the latest processing end.
const MAX_LONG_FRAMES: usize = 10;

/// INP of a restored page view whose interactions were all under the observer's threshold.
pub const FAST_RESTORED_INP_MS: f64 = 8.0;

impl Inp {
    pub fn new() -> Inp {
        Inp::default()
    }

    /// Adds one entry. Entries without an interaction id (`interactionId == 0`) are not
    /// interactions, but count for the frame they were presented in.
    pub fn add(&mut self, entry: EventTiming) {
        self.latest_processing_end = self.latest_processing_end.max(entry.processing_end);
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
                frame.start_time = frame.start_time.min(entry.start_time);
                frame.processing_start = frame.processing_start.min(entry.processing_start);
                frame.processing_end = frame.processing_end.max(entry.processing_end);
                *frame
            }
            None => {
                let frame = Frame {
                    id: self.next_frame,
                    render_time,
                    start_time: entry.start_time,
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

    /// Adds a long animation frame, then lets go of those no interaction reported can overlap, as
    /// web-vitals' cleanup does. It keeps the long frames that overlap a kept frame of entries
    /// (the latest ten, and those of the longest interactions) from the frame's start to its
    /// processing end, and any of the latest ten that started after the latest processing end
    /// (their entries may be still to come). web-vitals cleans up when the page is next idle
    /// after entries arrive; here, when the list grows.
    pub fn add_long_frame(&mut self, frame: LongFrame) {
        self.long_frames.push(frame);
        let recent = self.long_frames.len().saturating_sub(MAX_LONG_FRAMES);
        for (i, frame) in self.long_frames.iter_mut().enumerate() {
            frame.kept = i >= recent && frame.start_time > self.latest_processing_end;
        }
        for frame in &self.frames {
            keep_overlapping(&mut self.long_frames, frame);
        }
        for interaction in &self.longest {
            keep_overlapping(&mut self.long_frames, &interaction.frame);
        }
        self.long_frames.retain(|f| f.kept);
    }

    /// What the long animation frames say about `interaction`, as web-vitals' attribution
    /// (`attributeLoAFDetails`) computes it, quirks included; `None` when no long frame overlaps
    /// it from its start to its processing end (and, as there, when it started at 0).
    ///
    /// Each frame adds its style and layout, `startTime + duration − styleAndLayoutStart` (no
    /// check for a frame without one). Each script that ends at or after the interaction's start
    /// counts from there (not clipped at the paint); its forced style and layout, shared out in
    /// proportion to the part counted, moves from script to style and layout. The longest script
    /// is the first of the longest (a strict `>`), in the phase where it started. Painting is the
    /// time from the end of the last frame to the paint, when that frame ends after processing
    /// (negative if the paint's time, rounded to 8 ms, comes first). The rest is unattributed.
    /// `script(frame, i)` is the `i`th script of a long frame, `None` past its last.
    pub fn long_frames_of(
        &self,
        interaction: &Interaction,
        script: impl Fn(&LongFrame, usize) -> Option<ScriptTiming>,
    ) -> Option<FrameTotals> {
        let (processing_start, next_paint, processing_end) = interaction.times();
        let start = interaction.first.start_time;
        let input_delay = processing_start - start;
        let processing_duration = processing_end - processing_start;
        if !truthy(start) || !truthy(next_paint) {
            return None;
        }
        let mut totals = FrameTotals { script: 0.0, style_and_layout: 0.0, paint: 0.0, unattributed: 0.0, longest_script: None };
        let mut longest = 0.0;
        let mut last = None;
        // web-vitals' `getIntersectingLoAFs`: the long frames that end at or after the start and
        // start at or before the end of processing, looked for in the order delivered, stopping
        // at the first one past the end (they come in time order).
        for (i, frame) in self.long_frames.iter().enumerate() {
            if frame.end() < start {
                continue;
            }
            if frame.start_time > processing_end {
                break;
            }
            totals.style_and_layout = totals.style_and_layout + frame.start_time + frame.duration - frame.style_and_layout_start;
            let mut index = 0;
            while let Some(script) = script(frame, index) {
                index += 1;
                let end = script.start_time + script.duration;
                if end < start {
                    continue;
                }
                let intersecting = end - start.max(script.start_time);
                let forced =
                    if truthy(script.duration) { intersecting / script.duration * script.forced_style_and_layout_duration } else { 0.0 };
                totals.script += intersecting - forced;
                totals.style_and_layout += forced;
                if intersecting > longest {
                    let subpart = if script.start_time < start + input_delay {
                        "input-delay"
                    } else if script.start_time >= start + input_delay + processing_duration {
                        "presentation-delay"
                    } else {
                        "processing-duration"
                    };
                    totals.longest_script =
                        Some(LongestScript { frame: i, index: index - 1, subpart, intersecting_duration: intersecting });
                    longest = intersecting;
                }
            }
            last = Some(frame.end());
        }
        let last = last?;
        if last >= start + input_delay + processing_duration {
            totals.paint = next_paint - last;
        }
        totals.unattributed = next_paint - start - totals.script - totals.style_and_layout - totals.paint;
        Some(totals)
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
        let (processing_start, next_paint, processing_end) = self.times();
        Phases {
            input_delay: processing_start - first.start_time,
            processing_duration: processing_end - processing_start,
            presentation_delay: next_paint - processing_end,
        }
    }

    /// When processing started and ended, and the next paint (web-vitals' `nextPaintTime`), as
    /// the phases count them.
    fn times(&self) -> (f64, f64, f64) {
        let first = &self.first;
        let processing_start = self.frame.processing_start.max(first.start_time);
        let next_paint = (first.start_time + first.duration).max(processing_start);
        (processing_start, next_paint, self.frame.processing_end.min(next_paint))
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

    /// A `long-animation-frame` entry.
    pub fn long_frame(&mut self, entry: Js) {
        self.inp.add_long_frame(LongFrame::new(
            host::num(entry, "startTime"),
            host::num(entry, "duration"),
            host::num(entry, "styleAndLayoutStart"),
            Some(host::keep(entry)),
        ));
    }

    /// Lets go of the page's entries (the agent stops).
    pub fn release(&mut self) {
        self.inp.long_frames.clear();
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
            let scripts =
                |frame: Option<&LongFrame>| host::get(frame.and_then(|f| f.entry.as_ref()).map_or(host::UNDEFINED, Kept::js), "scripts");
            let script = |frame: &LongFrame, index: usize| {
                let list = scripts(Some(frame));
                (index < host::len(list) as usize).then(|| {
                    let script = host::at(list, index as u32);
                    ScriptTiming {
                        start_time: host::num(script, "startTime"),
                        duration: host::num(script, "duration"),
                        forced_style_and_layout_duration: host::num(script, "forcedStyleAndLayoutDuration"),
                    }
                })
            };
            if let Some(t) = self.inp.long_frames_of(interaction, script) {
                attribution
                    .num("totalScriptDuration", t.script)
                    .num("totalStyleAndLayoutDuration", t.style_and_layout)
                    .num("totalPaintDuration", t.paint)
                    .num("totalUnattributedDuration", t.unattributed);
                if let Some(longest) = t.longest_script {
                    let script = host::at(scripts(self.inp.long_frames.get(longest.frame)), longest.index as u32);
                    // The URL without its query and fragment (signed URLs, session ids).
                    let url = host::text(script, "sourceURL").and_then(|u| pieces(&u, b"?#").next().map(String::from));
                    attribution
                        .str("longestScriptSubpart", longest.subpart)
                        .num("longestScriptIntersectingDuration", longest.intersecting_duration)
                        .text("longestScriptURL", url)
                        .text("longestScriptFunction", host::text(script, "sourceFunctionName"))
                        .text("longestScriptInvoker", host::text(script, "invoker"))
                        .text("longestScriptInvokerType", host::text(script, "invokerType"))
                        .num("longestScriptCharPosition", host::num(script, "sourceCharPosition"))
                        .num("longestScriptDuration", host::num(script, "duration"));
                }
            }
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

/// Marks the long frames that overlap `frame` from its start to its processing end as kept.
fn keep_overlapping(long_frames: &mut [LongFrame], frame: &Frame) {
    for long in long_frames {
        // web-vitals' `getIntersectingLoAFs`, as in `long_frames_of`.
        if long.end() < frame.start_time {
            continue;
        }
        if long.start_time > frame.processing_end {
            break;
        }
        long.kept = true;
    }
}

/// Whether JavaScript takes `x` as true (web-vitals tests times with `!`): not 0, not NaN.
fn truthy(x: f64) -> bool {
    x != 0.0 && !x.is_nan()
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

    /// An `Inp`, and the scripts and test ids of its long frames (by start time).
    #[derive(Default)]
    struct Page {
        inp: Inp,
        scripts: Vec<(f64, Vec<ScriptTiming>)>,
        ids: Vec<(f64, u32)>,
    }

    impl Page {
        /// Adds long animation frame `id` from `start` lasting `duration`, its style and layout
        /// from `layout`, with scripts of (start, duration, forced style and layout).
        fn long(&mut self, id: u32, start: f64, duration: f64, layout: f64, scripts: &[(f64, f64, f64)]) {
            let scripts = scripts
                .iter()
                .map(|&(start_time, duration, forced_style_and_layout_duration)| ScriptTiming {
                    start_time,
                    duration,
                    forced_style_and_layout_duration,
                })
                .collect();
            // Told apart by their start times (the tests give each frame its own).
            self.scripts.push((start, scripts));
            self.ids.push((start, id));
            self.inp.add_long_frame(LongFrame::new(start, duration, layout, None));
        }

        fn totals(&self) -> Option<FrameTotals> {
            let script = |f: &LongFrame, i: usize| self.scripts.iter().find(|s| s.0 == f.start_time).and_then(|s| s.1.get(i).copied());
            let mut totals = self.inp.long_frames_of(self.inp.interaction(Some(1))?, script)?;
            // The longest script's frame by the test's id, not its place in the list.
            if let Some(longest) = &mut totals.longest_script {
                longest.frame = self.id(&self.inp.long_frames[longest.frame]) as usize;
            }
            Some(totals)
        }

        fn id(&self, frame: &LongFrame) -> u32 {
            self.ids.iter().find(|(start, _)| *start == frame.start_time).map_or(u32::MAX, |(_, id)| *id)
        }

        fn kept(&self) -> Vec<u32> {
            self.inp.long_frames.iter().map(|f| self.id(f)).collect()
        }
    }

    /// The click of the phases test: input at 1000, handlers 1030–1150, paint at 1200.
    fn click() -> EventTiming {
        EventTiming { interaction_id: 7, start_time: 1_000.0, duration: 200.0, processing_start: 1_030.0, processing_end: 1_150.0 }
    }

    #[test]
    fn long_frames_split_the_interaction_as_web_vitals_does() {
        let mut page = Page::default();
        page.inp.add(click());
        // Before the input, ended: not counted.
        page.long(0, 700.0, 60.0, 750.0, &[(705.0, 50.0, 0.0)]);
        // The frame the click came in: a task from 955 to 1015 (15 ms of it after the input),
        // style and layout from 1020 to its end at 1028.
        page.long(1, 950.0, 78.0, 1_020.0, &[(955.0, 60.0, 0.0)]);
        // The click's frame: the handler 1030–1150 with 12 ms of forced layout, a rAF callback
        // 1155–1175, style and layout 1180–1198.
        page.long(2, 1_028.0, 170.0, 1_180.0, &[(1_030.0, 120.0, 12.0), (1_155.0, 20.0, 0.0)]);
        // After processing ended (starts past 1150): not counted.
        page.long(3, 1_210.0, 60.0, 1_260.0, &[(1_212.0, 40.0, 0.0)]);
        // Scripts: 15 (the task, from the input on) + (120 − 12) + 20 = 143.
        // Style and layout: 8 (frame 1) + 18 (frame 2) + 12 forced = 38.
        // Paint: frame 2 ends at 1198, after processing (1000 + 30 + 120 = 1150): 1200 − 1198 = 2.
        // Unattributed: 200 − 143 − 38 − 2 = 17.
        // Longest: the handler, 120 ms, starting at 1030 = input + input delay: processing.
        assert_eq!(
            page.totals(),
            Some(FrameTotals {
                script: 143.0,
                style_and_layout: 38.0,
                paint: 2.0,
                unattributed: 17.0,
                longest_script: Some(LongestScript { frame: 2, index: 0, subpart: "processing-duration", intersecting_duration: 120.0 }),
            })
        );
    }

    #[test]
    fn long_frame_quirks_are_kept() {
        let mut page = Page::default();
        page.inp.add(click());
        // A frame without style and layout (`styleAndLayoutStart` 0: web-vitals adds
        // 950 + 60 − 0 = 1010). Two scripts of 25 ms after the input: the first is the longest
        // (strict >); it started before processing, in the input delay. A script of duration 0
        // has no forced layout to share (no 0 / 0).
        page.long(5, 950.0, 60.0, 0.0, &[(975.0, 50.0, 10.0), (1_005.0, 25.0, 0.0), (1_009.0, 0.0, 3.0)]);
        // A script from 1150 (the end of processing: presentation delay) to 1210, past the paint
        // at 1200: not clipped there. The frame ends at 1204, after the paint (the event's
        // duration is rounded to 8 ms): painting is 1200 − 1204 = −4.
        page.long(6, 1_140.0, 64.0, 1_204.0, &[(1_150.0, 60.0, 0.0)]);
        // Scripts: (1025 − 1000) − 25 / 50 × 10 = 20; 25; 0; 60 → 105.
        // Style and layout: 1010 + 5 (forced) + 0 (1140 + 64 − 1204) = 1015.
        // Unattributed: 200 − 105 − 1015 − (−4) = −916.
        let t = page.totals();
        assert_eq!(
            t,
            Some(FrameTotals {
                script: 105.0,
                style_and_layout: 1_015.0,
                paint: -4.0,
                unattributed: -916.0,
                longest_script: Some(LongestScript { frame: 6, index: 0, subpart: "presentation-delay", intersecting_duration: 60.0 }),
            })
        );
        // Without the long script, the first of the two 25 ms ones, in the input delay.
        let mut page = Page::default();
        page.inp.add(click());
        page.long(5, 950.0, 60.0, 0.0, &[(975.0, 50.0, 10.0), (1_005.0, 25.0, 0.0)]);
        let longest = page.totals().and_then(|t| t.longest_script);
        assert_eq!(longest, Some(LongestScript { frame: 5, index: 0, subpart: "input-delay", intersecting_duration: 25.0 }));
        // The last frame ends before processing ends (1010 < 1150): no paint time.
        assert_eq!(page.totals().map(|t| t.paint), Some(0.0));
    }

    #[test]
    fn without_long_frames_there_is_no_account() {
        let mut page = Page::default();
        page.inp.add(click());
        assert_eq!(page.totals(), None, "no long frames (Firefox, Safari, or none long)");
        // One ending before the input.
        page.long(0, 900.0, 99.0, 990.0, &[]);
        assert_eq!(page.totals(), None);
        // Overlapping, but without a script after the input (it ends at 999): style and layout
        // 990 + 60 − 1040 = 10; the frame ends before processing did (1050 < 1150): no paint.
        page.long(1, 990.0, 60.0, 1_040.0, &[(992.0, 7.0, 0.0)]);
        // Starting after processing ended: not counted.
        page.long(2, 1_151.0, 60.0, 1_200.0, &[]);
        let only_frame_1 = Some(FrameTotals { script: 0.0, style_and_layout: 10.0, paint: 0.0, unattributed: 190.0, longest_script: None });
        assert_eq!(page.totals(), only_frame_1);
        // Delivered out of time order, after one past the end: never looked at (web-vitals stops
        // at the first frame past the end), so let go at once.
        page.long(3, 1_060.0, 60.0, 1_100.0, &[(1_061.0, 30.0, 0.0)]);
        assert_eq!(page.totals(), only_frame_1);
        assert_eq!(page.kept(), [1, 2]);
        // An interaction at time 0 has none (web-vitals tests `!interactionTime`).
        let mut page = Page::default();
        page.inp.add(EventTiming { start_time: 0.0, ..click() });
        page.long(0, 0.0, 100.0, 90.0, &[(10.0, 50.0, 0.0)]);
        assert_eq!(page.totals(), None);
    }

    #[test]
    fn long_frames_are_kept_while_an_interaction_may_need_them() {
        let mut page = Page::default();
        // A hover handled from 905 (no interaction) and the click, presented in one frame
        // (render times 1200 and 1200): the frame starts at 900 and processing ends at 1150.
        page.inp.add(EventTiming { interaction_id: 0, start_time: 900.0, duration: 300.0, processing_start: 905.0, processing_end: 920.0 });
        page.inp.add(click());
        // Ends at 930: overlaps the frame (from 900), kept; but not the click (from 1000), so not
        // counted for it.
        page.long(0, 850.0, 80.0, 925.0, &[(860.0, 60.0, 0.0)]);
        // Ends at 890, before the frame, and starts before the latest processing end (1150): gone.
        page.long(1, 820.0, 70.0, 880.0, &[]);
        assert_eq!(page.kept(), [0]);
        assert_eq!(page.totals(), None);
        // Twelve later frames, each starting after the latest processing end: the latest ten stay.
        for i in 1..=12 {
            page.long(i + 1, 1_200.0 + 100.0 * f64::from(i), 60.0, 0.0, &[]);
        }
        assert_eq!(page.kept(), [0, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]);
        // Ten frames of entries later (no interaction; processing ends at 5902), the click's frame
        // is no longer among the latest ten, but the click is among the longest interactions:
        // the long frame overlapping it stays; the others started before 5902 and overlap no
        // frame kept; a new one after it stays.
        for i in 0..10 {
            let t = 5_000.0 + 100.0 * f64::from(i);
            page.inp.add(EventTiming {
                interaction_id: 0,
                start_time: t,
                duration: 40.0,
                processing_start: t + 1.0,
                processing_end: t + 2.0,
            });
        }
        page.long(14, 6_000.0, 60.0, 0.0, &[]);
        assert_eq!(page.kept(), [0, 14]);
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
