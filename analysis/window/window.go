// Package window evaluates a Canary's deployment windows
// (analysis.windows): recurring spans of time, each opening at every firing
// of a cron schedule and staying open for a duration, inside which a new
// revision may start its rollout.
//
// A window's schedule is a standard five-field cron expression (minute hour
// day-of-month month day-of-week) or a descriptor (@yearly, @annually,
// @monthly, @weekly, @daily, @midnight, @hourly), read in the window's time
// zone (UTC when none is given), so "0 9 * * 1-5" with timezone
// Europe/Paris opens at 09:00 Paris time on working days, whatever the
// season. The duration is elapsed time: an 8h window that spans a daylight
// saving change closes 8 real hours after it opened, which reads 7 or 9 hours
// on the wall clock. @every (a delay, not a time of day) and a time zone
// written into the schedule (CRON_TZ=, TZ=) are refused: the timezone field
// says it.
//
// Windows may overlap or follow one another; a run sees their union, so a
// window that opens before another closes extends the span.
//
// Nothing here decides what a run does: the canary engine asks Evaluate
// whether now is inside a window, and until when.
package window

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/sluicehq/sluice/crds/sluice/v1beta1"
)

// Horizon bounds how far Evaluate follows a span of windows that keep
// overlapping: a union still open a Horizon after now is reported as closing
// then, so that a window set that never closes (a schedule firing every
// minute, open for an hour) costs bounded work.
const Horizon = 366 * 24 * time.Hour

// maxSteps bounds the extensions of a span Evaluate follows; with Horizon it
// keeps the work bounded whatever the schedules.
const maxSteps = 20000

// Window is one compiled analysis window.
type Window struct {
	// Schedule is the cron expression, as written.
	Schedule string
	// Location is the schedule's time zone.
	Location *time.Location
	// Duration is how long the window stays open after each firing.
	Duration time.Duration

	sched cron.Schedule
}

// Set is a compiled list of windows. The zero Set has no windows: it is
// always open.
type Set struct {
	windows []Window
}

// Compile parses windows, naming the first bad schedule, duration or time
// zone (every bad one, joined) in its error.
func Compile(windows []v1beta1.AnalysisWindow) (Set, error) {
	var (
		set  Set
		errs []error
	)
	for i, w := range windows {
		cw, err := compile(w)
		if err != nil {
			errs = append(errs, fmt.Errorf("windows[%d]: %w", i, err))
			continue
		}
		set.windows = append(set.windows, cw)
	}
	if err := errors.Join(errs...); err != nil {
		return Set{}, err
	}
	return set, nil
}

// compile parses one window.
func compile(w v1beta1.AnalysisWindow) (Window, error) {
	var errs []error
	spec := strings.TrimSpace(w.Schedule)
	switch {
	case spec == "":
		errs = append(errs, errors.New("schedule is empty"))
	case strings.HasPrefix(spec, "TZ=") || strings.HasPrefix(spec, "CRON_TZ="):
		errs = append(errs, fmt.Errorf("schedule %q names a time zone: set timezone instead", w.Schedule))
	case strings.HasPrefix(spec, "@every"):
		errs = append(errs, fmt.Errorf("schedule %q is a delay, not a time: use a cron expression such as \"0 9 * * 1-5\"", w.Schedule))
	}
	loc := time.UTC
	if tz := strings.TrimSpace(w.TimeZone); tz != "" {
		l, err := time.LoadLocation(tz)
		if err != nil {
			errs = append(errs, fmt.Errorf("timezone %q: %w", w.TimeZone, err))
		} else {
			loc = l
		}
	}
	var d time.Duration
	if w.Duration == "" {
		errs = append(errs, errors.New("duration is empty"))
	} else if v, err := time.ParseDuration(w.Duration); err != nil {
		errs = append(errs, fmt.Errorf("duration %q: %w", w.Duration, err))
	} else if v <= 0 {
		errs = append(errs, fmt.Errorf("duration %q is not positive", w.Duration))
	} else {
		d = v
	}
	if len(errs) > 0 {
		return Window{}, errors.Join(errs...)
	}
	sched, err := parse(spec)
	if err != nil {
		return Window{}, fmt.Errorf("schedule %q: %w", w.Schedule, err)
	}
	spec2, ok := sched.(*cron.SpecSchedule)
	if !ok {
		return Window{}, fmt.Errorf("schedule %q is not a time of day", w.Schedule)
	}
	spec2.Location = loc
	return Window{Schedule: w.Schedule, Location: loc, Duration: d, sched: spec2}, nil
}

// parse is cron.ParseStandard, with a panic (the parser has had some on odd
// input) turned into an error.
func parse(spec string) (s cron.Schedule, err error) {
	defer func() {
		if v := recover(); v != nil {
			s, err = nil, fmt.Errorf("cannot parse: %v", v)
		}
	}()
	return cron.ParseStandard(spec)
}

// Windows returns the compiled windows.
func (s Set) Windows() []Window { return append([]Window(nil), s.windows...) }

// Evaluate compiles windows and evaluates them at now; see Set.Evaluate.
func Evaluate(windows []v1beta1.AnalysisWindow, now time.Time) (inside bool, nextOpen time.Time, closes time.Time, err error) {
	set, err := Compile(windows)
	if err != nil {
		return false, time.Time{}, time.Time{}, err
	}
	return set.Evaluate(now)
}

// Evaluate says whether now is inside a window, and when the span of windows
// around it changes:
//
//   - No windows: inside is true and both times are zero (no window means
//     no restriction).
//   - Inside: closes is when the union of the windows open at now ends, and
//     nextOpen when the next window opens after that.
//   - Outside: nextOpen is when the next window opens, and closes when the
//     span it starts ends.
//
// A window is open from each firing f of its schedule (inclusive) to
// f+duration (exclusive). A span still open Horizon after the time it is
// followed from is reported as closing then. Times are in now's location.
// The error is non-nil when no window ever opens again (a schedule such as
// "0 0 30 2 *" that never fires).
func (s Set) Evaluate(now time.Time) (inside bool, nextOpen time.Time, closes time.Time, err error) {
	if len(s.windows) == 0 {
		return true, time.Time{}, time.Time{}, nil
	}
	loc := now.Location()
	if end := s.spanEnd(now); end.After(now) {
		next := s.nextFiring(end)
		if !next.IsZero() {
			next = next.In(loc)
		}
		return true, next, end.In(loc), nil
	}
	next := s.nextFiring(now)
	if next.IsZero() {
		return false, time.Time{}, time.Time{}, fmt.Errorf("no window opens after %s: %s never fire again", now.Format(time.RFC3339), s.schedules())
	}
	return false, next.In(loc), s.spanEnd(next).In(loc), nil
}

// schedules lists the windows' schedules, quoted, for messages.
func (s Set) schedules() string {
	var b strings.Builder
	for i, w := range s.windows {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%q", w.Schedule)
	}
	return b.String()
}

// spanEnd returns the end of the union of windows open at t, following
// windows that open before the span closes; t itself when none is open.
func (s Set) spanEnd(t time.Time) time.Time {
	end := t
	for range maxSteps {
		next := end
		for _, w := range s.windows {
			if f := w.latestOpen(end); !f.IsZero() {
				if c := f.Add(w.Duration); c.After(next) {
					next = c
				}
			}
		}
		if !next.After(end) {
			return end
		}
		end = next
		if end.Sub(t) >= Horizon {
			return end
		}
	}
	return end
}

// nextFiring returns the earliest firing of any window strictly after t;
// zero when none fires again.
func (s Set) nextFiring(t time.Time) time.Time {
	var best time.Time
	for _, w := range s.windows {
		if f := w.sched.Next(t); !f.IsZero() && (best.IsZero() || f.Before(best)) {
			best = f
		}
	}
	return best
}

// latestOpen returns the latest firing f of w with f ≤ t < f+Duration: the
// opening of w's window that is open at t, or zero when none is.
//
// cron schedules only go forward, so it searches back in doubling steps
// for the earliest start from which the next firing is at most t, then walks
// forward to the last one; the walk is short because the step at most doubles
// the gap to that firing.
func (w Window) latestOpen(t time.Time) time.Time {
	earliest := t.Add(-w.Duration) // a firing must be after this
	var f time.Time
	for step := time.Minute; ; step *= 2 {
		from := t.Add(-step)
		if !from.After(earliest) {
			from = earliest
		}
		if n := w.sched.Next(from); !n.IsZero() && !n.After(t) {
			f = n
			break
		}
		if from.Equal(earliest) {
			return time.Time{}
		}
	}
	for range maxSteps {
		n := w.sched.Next(f)
		if n.IsZero() || n.After(t) {
			break
		}
		f = n
	}
	return f
}
