package window_test

import (
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/analysis/window"
	"github.com/sluicehq/sluice/crds/sluice/v1beta1"
)

// at parses an RFC 3339 time: the fake clock of these tests.
func at(t *testing.T, s string) time.Time {
	t.Helper()
	v, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatalf("bad test time %q: %v", s, err)
	}
	return v
}

func w(schedule, duration, tz string) v1beta1.AnalysisWindow {
	return v1beta1.AnalysisWindow{Schedule: schedule, Duration: duration, TimeZone: tz}
}

func TestEvaluate(t *testing.T) {
	weekdays := []v1beta1.AnalysisWindow{w("0 9 * * 1-5", "8h", "")}
	paris := []v1beta1.AnalysisWindow{w("0 9 * * 1-5", "8h", "Europe/Paris")}
	// Two windows that overlap (10-14, 13-16) and one that starts as the
	// second closes (16-17): their union is one span, 10:00 to 17:00.
	chained := []v1beta1.AnalysisWindow{
		w("0 10 * * *", "4h", ""),
		w("0 13 * * *", "3h", ""),
		w("0 16 * * *", "1h", ""),
	}
	// An hourly window open for 30 minutes, and a weekly one.
	mixed := []v1beta1.AnalysisWindow{w("@hourly", "30m", ""), w("@weekly", "2h", "")}
	// New York switched to daylight saving time on Sunday 2026-03-08 at
	// 02:00 (UTC-5 to UTC-4) and back on Sunday 2026-11-01 at 02:00.
	newYork := []v1beta1.AnalysisWindow{w("0 9 * * *", "1h", "America/New_York")}
	// 02:30 does not exist in New York on 2026-03-08.
	gap := []v1beta1.AnalysisWindow{w("30 2 * * *", "1h", "America/New_York")}

	for _, tc := range []struct {
		name      string
		windows   []v1beta1.AnalysisWindow
		now       string
		inside    bool
		nextOpen  string // "" means zero
		closes    string // "" means zero
		wantLocal bool   // compare in now's location
	}{
		{name: "no windows: always inside", windows: nil, now: "2026-01-07T03:00:00Z", inside: true},
		// 2026-01-07 is a Wednesday.
		{name: "before the window", windows: weekdays, now: "2026-01-07T08:59:59Z", nextOpen: "2026-01-07T09:00:00Z", closes: "2026-01-07T17:00:00Z"},
		{name: "at the opening", windows: weekdays, now: "2026-01-07T09:00:00Z", inside: true, closes: "2026-01-07T17:00:00Z", nextOpen: "2026-01-08T09:00:00Z"},
		{name: "inside", windows: weekdays, now: "2026-01-07T12:34:56Z", inside: true, closes: "2026-01-07T17:00:00Z", nextOpen: "2026-01-08T09:00:00Z"},
		{name: "just before closing", windows: weekdays, now: "2026-01-07T16:59:59.999Z", inside: true, closes: "2026-01-07T17:00:00Z", nextOpen: "2026-01-08T09:00:00Z"},
		{name: "at the closing", windows: weekdays, now: "2026-01-07T17:00:00Z", nextOpen: "2026-01-08T09:00:00Z", closes: "2026-01-08T17:00:00Z"},
		{name: "friday evening waits for monday", windows: weekdays, now: "2026-01-09T18:00:00Z", nextOpen: "2026-01-12T09:00:00Z", closes: "2026-01-12T17:00:00Z"},
		{name: "saturday waits for monday", windows: weekdays, now: "2026-01-10T10:00:00Z", nextOpen: "2026-01-12T09:00:00Z", closes: "2026-01-12T17:00:00Z"},
		// Paris is UTC+1 in January: 09:00 Paris is 08:00 UTC.
		{name: "time zone", windows: paris, now: "2026-01-07T08:30:00Z", inside: true, closes: "2026-01-07T16:00:00Z", nextOpen: "2026-01-08T08:00:00Z"},
		{name: "time zone, before", windows: paris, now: "2026-01-07T07:59:00Z", nextOpen: "2026-01-07T08:00:00Z", closes: "2026-01-07T16:00:00Z"},
		// In July Paris is UTC+2.
		{name: "time zone in summer", windows: paris, now: "2026-07-08T06:30:00Z", nextOpen: "2026-07-08T07:00:00Z", closes: "2026-07-08T15:00:00Z"},
		{name: "result in now's location", windows: paris, now: "2026-01-07T07:59:00+01:00", nextOpen: "2026-01-07T09:00:00+01:00", closes: "2026-01-07T17:00:00+01:00", wantLocal: true},
		// DST: 09:00 New York is 14:00 UTC before the switch, 13:00 after.
		{name: "DST: day before spring forward", windows: newYork, now: "2026-03-07T13:30:00Z", nextOpen: "2026-03-07T14:00:00Z", closes: "2026-03-07T15:00:00Z"},
		{name: "DST: day before, inside", windows: newYork, now: "2026-03-07T14:30:00Z", inside: true, closes: "2026-03-07T15:00:00Z", nextOpen: "2026-03-08T13:00:00Z"},
		{name: "DST: day of spring forward", windows: newYork, now: "2026-03-08T13:30:00Z", inside: true, closes: "2026-03-08T14:00:00Z", nextOpen: "2026-03-09T13:00:00Z"},
		{name: "DST: day of spring forward, at the old time", windows: newYork, now: "2026-03-08T14:00:00Z", nextOpen: "2026-03-09T13:00:00Z", closes: "2026-03-09T14:00:00Z"},
		{name: "DST: fall back", windows: newYork, now: "2026-11-01T13:30:00Z", nextOpen: "2026-11-01T14:00:00Z", closes: "2026-11-01T15:00:00Z"},
		// The 02:30 that does not exist on the day of the switch: the
		// window opens on the days around it only.
		{name: "DST: skipped local time", windows: gap, now: "2026-03-08T05:00:00Z", nextOpen: "2026-03-09T06:30:00Z", closes: "2026-03-09T07:30:00Z"},
		{name: "overlap: first window", windows: chained, now: "2026-01-07T11:00:00Z", inside: true, closes: "2026-01-07T17:00:00Z", nextOpen: "2026-01-08T10:00:00Z"},
		{name: "overlap: second window", windows: chained, now: "2026-01-07T14:30:00Z", inside: true, closes: "2026-01-07T17:00:00Z", nextOpen: "2026-01-08T10:00:00Z"},
		{name: "overlap: adjacent window", windows: chained, now: "2026-01-07T16:00:00Z", inside: true, closes: "2026-01-07T17:00:00Z", nextOpen: "2026-01-08T10:00:00Z"},
		{name: "overlap: before", windows: chained, now: "2026-01-07T09:00:00Z", nextOpen: "2026-01-07T10:00:00Z", closes: "2026-01-07T17:00:00Z"},
		{name: "overlap: after", windows: chained, now: "2026-01-07T17:00:00Z", nextOpen: "2026-01-08T10:00:00Z", closes: "2026-01-08T17:00:00Z"},
		{name: "hourly: inside", windows: mixed, now: "2026-01-07T10:29:00Z", inside: true, closes: "2026-01-07T10:30:00Z", nextOpen: "2026-01-07T11:00:00Z"},
		{name: "hourly: outside", windows: mixed, now: "2026-01-07T10:45:00Z", nextOpen: "2026-01-07T11:00:00Z", closes: "2026-01-07T11:30:00Z"},
		// Sunday midnight the weekly window (to 02:00) covers the hourly ones.
		{name: "weekly extends hourly", windows: mixed, now: "2026-01-11T00:40:00Z", inside: true, closes: "2026-01-11T02:30:00Z", nextOpen: "2026-01-11T03:00:00Z"},
		{name: "long duration", windows: []v1beta1.AnalysisWindow{w("0 0 1 * *", "240h", "")}, now: "2026-01-10T23:00:00Z", inside: true, closes: "2026-01-11T00:00:00Z", nextOpen: "2026-02-01T00:00:00Z"},
		{name: "never closes within the horizon", windows: []v1beta1.AnalysisWindow{w("* * * * *", "1h", "")}, now: "2026-01-07T10:00:30Z", inside: true,
			closes: "2027-01-08T11:00:00Z", nextOpen: "2027-01-08T11:01:00Z"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			now := at(t, tc.now)
			inside, next, closes, err := window.Evaluate(tc.windows, now)
			if err != nil {
				t.Fatalf("Evaluate: %v", err)
			}
			if inside != tc.inside {
				t.Errorf("inside = %v, want %v", inside, tc.inside)
			}
			check := func(what string, got time.Time, want string) {
				t.Helper()
				if want == "" {
					if !got.IsZero() {
						t.Errorf("%s = %v, want zero", what, got)
					}
					return
				}
				wt := at(t, want)
				if !got.Equal(wt) {
					t.Errorf("%s = %v, want %v", what, got.UTC(), wt.UTC())
				}
				if tc.wantLocal && got.Format(time.RFC3339) != want {
					t.Errorf("%s = %s, want %s (in now's location)", what, got.Format(time.RFC3339), want)
				}
			}
			check("nextOpen", next, tc.nextOpen)
			check("closes", closes, tc.closes)
		})
	}
}

// TestTicking walks a fake clock through a week in 20-minute steps and
// checks every answer against a brute-force reading of the same windows.
func TestTicking(t *testing.T) {
	windows := []v1beta1.AnalysisWindow{
		w("0 9 * * 1-5", "8h", "Europe/Paris"),
		w("30 16 * * 5", "3h", "Europe/Paris"),
		w("0 22 * * *", "90m", ""),
	}
	set, err := window.Compile(windows)
	if err != nil {
		t.Fatal(err)
	}
	paris, err := time.LoadLocation("Europe/Paris")
	if err != nil {
		t.Fatal(err)
	}
	// opened reports whether a window opening at hh:mm local time (on the
	// days ok accepts) for d is open at m.
	opened := func(m time.Time, loc *time.Location, hh, mm int, d time.Duration, ok func(time.Weekday) bool) bool {
		l := m.In(loc)
		for _, day := range []time.Time{l, l.AddDate(0, 0, -1)} {
			s := time.Date(day.Year(), day.Month(), day.Day(), hh, mm, 0, 0, loc)
			if ok(s.Weekday()) && !s.After(m) && m.Sub(s) < d {
				return true
			}
		}
		return false
	}
	weekday := func(d time.Weekday) bool { return d >= time.Monday && d <= time.Friday }
	friday := func(d time.Weekday) bool { return d == time.Friday }
	any := func(time.Weekday) bool { return true }
	// open reports whether m is inside a window, by definition.
	open := func(m time.Time) bool {
		return opened(m, paris, 9, 0, 8*time.Hour, weekday) ||
			opened(m, paris, 16, 30, 3*time.Hour, friday) ||
			opened(m, time.UTC, 22, 0, 90*time.Minute, any)
	}
	start := at(t, "2026-03-23T00:00:00Z") // a Monday
	for now := start; now.Before(start.Add(7 * 24 * time.Hour)); now = now.Add(20 * time.Minute) {
		inside, next, closes, err := set.Evaluate(now)
		if err != nil {
			t.Fatalf("%v: %v", now, err)
		}
		if want := open(now); inside != want {
			t.Fatalf("%v (Paris %v): inside = %v, want %v", now, now.In(paris), inside, want)
		}
		// Every 5 minutes (all windows open on :00 or :30) up to closes is open (inside) or closed (outside) up
		// to nextOpen, and the boundary minute flips.
		from, to := now, next
		if inside {
			to = closes
		}
		for m := from.Truncate(time.Minute).Add(time.Minute); m.Before(to); m = m.Add(5 * time.Minute) {
			if open(m) != inside {
				t.Fatalf("%v: %v is %v but the state should hold until %v", now, m, open(m), to)
			}
		}
		if open(to) == inside {
			t.Fatalf("%v: state does not change at %v", now, to)
		}
		if !inside && !open(next) {
			t.Fatalf("%v: nextOpen %v is not open", now, next)
		}
	}
}

func TestErrors(t *testing.T) {
	now := at(t, "2026-01-07T10:00:00Z")
	for _, tc := range []struct {
		name    string
		windows []v1beta1.AnalysisWindow
		want    []string
	}{
		{"bad schedule", []v1beta1.AnalysisWindow{w("0 9 * *", "1h", "")}, []string{`windows[0]: schedule "0 9 * *"`, "expected exactly 5 fields"}},
		{"out of range", []v1beta1.AnalysisWindow{w("0 25 * * *", "1h", "")}, []string{`schedule "0 25 * * *"`, "above maximum"}},
		{"bad time zone", []v1beta1.AnalysisWindow{w("0 9 * * *", "1h", "Mars/Olympus")}, []string{`windows[0]: timezone "Mars/Olympus"`}},
		{"bad duration", []v1beta1.AnalysisWindow{w("0 9 * * *", "8 hours", "")}, []string{`duration "8 hours"`}},
		{"zero duration", []v1beta1.AnalysisWindow{w("0 9 * * *", "0s", "")}, []string{`duration "0s" is not positive`}},
		{"empty", []v1beta1.AnalysisWindow{{}}, []string{"schedule is empty", "duration is empty"}},
		{"@every", []v1beta1.AnalysisWindow{w("@every 1h", "1h", "")}, []string{`schedule "@every 1h" is a delay`}},
		{"zone in schedule", []v1beta1.AnalysisWindow{w("CRON_TZ=UTC 0 9 * * *", "1h", "")}, []string{"set timezone instead"}},
		{"second window named", []v1beta1.AnalysisWindow{w("0 9 * * *", "1h", ""), w("bad", "1h", "UTC")}, []string{`windows[1]: schedule "bad"`}},
		{"never fires", []v1beta1.AnalysisWindow{w("0 0 30 2 *", "1h", "")}, []string{"no window opens", `"0 0 30 2 *" never fire again`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inside, _, _, err := window.Evaluate(tc.windows, now)
			if err == nil {
				t.Fatal("no error")
			}
			if inside {
				t.Error("inside with an error")
			}
			for _, want := range tc.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
		})
	}
}
