// Command plot draws the results of bench/loadtest (results.json) as a PNG:
// panels of grouped bars, requests/s and p99 latency at full load per
// round and their medians, and p99 at equal load when the paced rounds
// were run, plain Caddy against the gateway, with the goal
// (≥ 0.95× plain Caddy's throughput, p99 within +0.5 ms) as a dashed line
// where it is judged.
// Only the standard library: the text is a built-in 5×7 bitmap font.
//
//	plot -in bench/out/results.json -out bench/out/load.png
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"os"
	"strconv"
	"strings"
)

type round struct {
	Round int     `json:"round"`
	RPS   float64 `json:"rps"`
	P99MS float64 `json:"p99_ms"`
}

type target struct {
	Key            string  `json:"key"`
	Name           string  `json:"name"`
	Rounds         []round `json:"rounds"`
	MedianRPS      float64 `json:"median_rps"`
	MedianP99      float64 `json:"median_p99_ms"`
	Paced          []round `json:"paced_rounds"`
	PacedMedianP99 float64 `json:"paced_median_p99_ms"`
}

type results struct {
	Machine map[string]string `json:"machine"`
	Config  map[string]any    `json:"config"`
	Targets []target          `json:"targets"`
	Ratios  struct {
		Throughput       float64 `json:"throughput"`
		P99DiffMS        float64 `json:"p99_diff_ms"`
		PairedThroughput float64 `json:"paired_throughput"`
		PairedP99DiffMS  float64 `json:"paired_p99_diff_ms"`
		PacedP99DiffMS   float64 `json:"paced_p99_diff_ms"`
		PacedPairedP99   float64 `json:"paced_paired_p99_diff_ms"`
	} `json:"ratios"`
	Goal struct {
		ThroughputMin float64 `json:"throughput_min"`
		P99MaxDiffMS  float64 `json:"p99_max_diff_ms"`
	} `json:"goal"`
}

var (
	white    = color.RGBA{255, 255, 255, 255}
	black    = color.RGBA{30, 30, 30, 255}
	grey     = color.RGBA{110, 110, 110, 255}
	gridGrey = color.RGBA{225, 225, 225, 255}
	red      = color.RGBA{200, 40, 40, 255}
	// plain caddy, gateway, then the variants
	seriesCol = []color.RGBA{{76, 114, 176, 255}, {221, 132, 82, 255}, {85, 168, 104, 255}, {129, 114, 179, 255}, {147, 120, 96, 255}, {218, 139, 195, 255}, {140, 140, 140, 255}}
)

func main() {
	in := flag.String("in", "bench/out/results.json", "results of bench/loadtest")
	out := flag.String("out", "bench/out/load.png", "the PNG to write")
	flag.Parse()
	b, err := os.ReadFile(*in)
	if err != nil {
		fail(err)
	}
	var r results
	if err := json.Unmarshal(b, &r); err != nil {
		fail(fmt.Errorf("%s: %w", *in, err))
	}
	if len(r.Targets) < 2 || len(r.Targets) > len(seriesCol) {
		fail(fmt.Errorf("%s: want 2 to %d targets, found %d", *in, len(seriesCol), len(r.Targets)))
	}
	img := draw(&r)
	f, err := os.Create(*out)
	if err != nil {
		fail(err)
	}
	if err := png.Encode(f, img); err != nil {
		f.Close()
		fail(err)
	}
	if err := f.Close(); err != nil {
		fail(err)
	}
	fmt.Println("plot:", *out)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "plot:", err)
	os.Exit(1)
}

const (
	width  = 1400
	height = 980
	// pacedHeight is the extra height of the equal-load panel.
	pacedHeight = 400
)

func draw(r *results) *image.RGBA {
	paced := len(r.Targets[0].Paced) > 0
	h := height
	if paced {
		h += pacedHeight
	}
	c := &canvas{image.NewRGBA(image.Rect(0, 0, width, h))}
	c.fill(0, 0, width, h, white)

	c.textCentered(width/2, 18, 3, black, "Load: plain Caddy vs the gateway (accounts_auth + reverse_proxy)")
	sub := fmt.Sprintf("%v rounds x %v, wrk -t%v -c%v, %v users with %v-bit RS256 tokens, %s CPUs",
		r.Config["rounds"], r.Config["duration"], r.Config["threads"], r.Config["connections"],
		r.Config["users"], r.Config["key_bits"], orQ(r.Machine["cpus"]))
	c.textCentered(width/2, 52, 2, grey, sub)
	// One line per goal, each with its own verdict: both estimates (the
	// medians and the per-round comparison) must meet it.
	green := color.RGBA{30, 130, 60, 255}
	goalLine := func(y int, text string, byMedian, byRound bool) {
		verdict, col := "ok", green
		switch {
		case byMedian != byRound:
			verdict, col = "UNCLEAR (estimates disagree)", red
		case !byMedian:
			verdict, col = "MISSED", red
		}
		c.textCentered(width/2, y, 2, col, text+": "+verdict)
	}
	g := r.Ratios
	goalLine(74, fmt.Sprintf("gateway / plain caddy throughput: x%.3f medians, x%.3f per round (goal >= %.2f)",
		g.Throughput, g.PairedThroughput, r.Goal.ThroughputMin),
		g.Throughput >= r.Goal.ThroughputMin, g.PairedThroughput >= r.Goal.ThroughputMin)
	p99, pairedP99, at := g.P99DiffMS, g.PairedP99DiffMS, "at full load"
	if paced {
		p99, pairedP99, at = g.PacedP99DiffMS, g.PacedPairedP99, "at equal load"
	}
	goalLine(96, fmt.Sprintf("p99 %s: %+.2f ms medians, %+.2f ms per round (goal <= +%.1f ms)", at, p99, pairedP99, r.Goal.P99MaxDiffMS),
		p99 <= r.Goal.P99MaxDiffMS, pairedP99 <= r.Goal.P99MaxDiffMS)

	// Legend, one row under the subtitle.
	legendW := 0
	for _, t := range r.Targets {
		legendW += 26 + len([]rune(t.Name))*12 + 60
	}
	lx, ly := (width-legendW+60)/2, 124
	for i, t := range r.Targets {
		c.fill(lx, ly, 18, 18, seriesCol[i])
		c.text(lx+26, ly+2, 2, black, t.Name)
		lx += 26 + len([]rune(t.Name))*12 + 60
	}

	base := r.Targets[0]
	rpsGoal := base.MedianRPS * r.Goal.ThroughputMin
	full := func(t target) []round { return t.Rounds }
	panel(c, 100, 200, width-140, 330, "Throughput per round at full load (requests/s, higher is better)", "req/s",
		fmt.Sprintf("- - goal: >= %.2f x plain caddy's median", r.Goal.ThroughputMin),
		r.Targets, full, func(x round) float64 { return x.RPS }, func(t target) float64 { return t.MedianRPS }, rpsGoal, true)
	// p99 is judged at equal load when the paced rounds were run: at full
	// load it is mostly queueing, and follows throughput.
	fullGoal, fullNote := base.MedianP99+r.Goal.P99MaxDiffMS, fmt.Sprintf("- - goal: <= plain caddy's median + %.1f ms", r.Goal.P99MaxDiffMS)
	if paced {
		fullGoal, fullNote = 0, "(queueing; not judged)"
	}
	panel(c, 100, 635, width-140, 290, "p99 latency per round at full load (ms, lower is better)", "p99 ms", fullNote,
		r.Targets, full, func(x round) float64 { return x.P99MS }, func(t target) float64 { return t.MedianP99 }, fullGoal, false)
	if paced {
		panel(c, 100, 635+pacedHeight, width-140, 290, "p99 latency per round at equal load, side by side (ms)", "p99 ms",
			fmt.Sprintf("- - goal: <= plain caddy's median + %.1f ms", r.Goal.P99MaxDiffMS),
			r.Targets, func(t target) []round { return t.Paced }, func(x round) float64 { return x.P99MS },
			func(t target) float64 { return t.PacedMedianP99 }, base.PacedMedianP99+r.Goal.P99MaxDiffMS, false)
	}
	return c.img
}

func orQ(s string) string {
	if s == "" {
		return "?"
	}
	return s
}

// panel draws grouped bars, one group per round and a last one of the
// medians, with a y axis from 0, grid lines and the goal (if above 0) as
// a dashed line.
func panel(c *canvas, x0, y0, w, h int, title, ylabel, goalNote string, targets []target,
	rounds func(target) []round, val func(round) float64, med func(target) float64, goal float64, kilo bool) {
	c.text(x0, y0-34, 2, black, title)

	n := 0
	var top float64
	for _, t := range targets {
		n = max(n, len(rounds(t)))
		for _, x := range rounds(t) {
			top = math.Max(top, val(x))
		}
	}
	top = math.Max(top, goal) * 1.12
	step := niceStep(top / 5)
	top = math.Ceil(top/step) * step
	yOf := func(v float64) int { return y0 + h - int(math.Round(v/top*float64(h))) }

	// Grid and y ticks.
	for v := 0.0; v <= top+step/2; v += step {
		y := yOf(v)
		c.fill(x0, y, w, 1, gridGrey)
		label := tickLabel(v, step, kilo)
		c.text(x0-10-len([]rune(label))*12, y-7, 2, grey, label)
	}
	c.textVertical(x0-84, y0+h/2, 2, grey, ylabel)

	groups := n + 1 // the rounds and the medians
	gw := float64(w) / float64(groups)
	barW := int(gw * 0.68 / float64(len(targets)))
	for g := range groups {
		gx := x0 + int(float64(g)*gw)
		label := fmt.Sprintf("round %d", g+1)
		if n > 6 { // "round N" would overlap its neighbours
			label = strconv.Itoa(g + 1)
		}
		if g == n {
			label = "median"
			c.fill(gx+2, y0, int(gw)-4, h, color.RGBA{246, 246, 246, 255})
		}
		c.textCentered(gx+int(gw/2), y0+h+12, 2, black, label)
		for i, t := range targets {
			var v float64
			switch {
			case g == n:
				v = med(t)
			case g < len(rounds(t)):
				v = val(rounds(t)[g])
			default:
				continue
			}
			bx := gx + int(gw/2) - barW*len(targets)/2 + i*barW
			by := yOf(v)
			c.fill(bx+1, by, barW-2, y0+h-by, seriesCol[i])
			vl := valueLabel(v, kilo)
			if len([]rune(vl))*12 <= barW+8 {
				c.textCentered(bx+barW/2, by-20, 2, black, vl)
			} else if len([]rune(vl))*6 <= barW+4 {
				c.textCentered(bx+barW/2, by-12, 1, black, vl)
			}
		}
	}
	// Axes and the goal.
	c.fill(x0, y0+h, w, 2, black)
	c.fill(x0-2, y0, 2, h+2, black)
	noteCol := grey
	if goal > 0 {
		c.dashedH(x0, x0+w, yOf(goal), red, 2)
		noteCol = red
	}
	c.text(x0+w-len([]rune(goalNote))*12, y0-34, 2, noteCol, goalNote)
}

// niceStep rounds a raw tick step up to 1, 2 or 5 times a power of ten.
func niceStep(raw float64) float64 {
	if raw <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if raw <= m*p {
			return m * p
		}
	}
	return 10 * p
}

func tickLabel(v, step float64, kilo bool) string {
	if kilo && step >= 1000 {
		return strconv.FormatFloat(v/1000, 'f', -1, 64) + "k"
	}
	decimals := max(0, -int(math.Floor(math.Log10(step))))
	return strconv.FormatFloat(v, 'f', decimals, 64)
}

func valueLabel(v float64, kilo bool) string {
	if kilo {
		if v >= 1000 {
			return strconv.FormatFloat(v/1000, 'f', 1, 64) + "k"
		}
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
	if v >= 10 {
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}

// canvas draws rectangles, dashed lines and bitmap-font text.
type canvas struct{ img *image.RGBA }

func (c *canvas) fill(x, y, w, h int, col color.RGBA) {
	r := image.Rect(x, y, x+w, y+h).Intersect(c.img.Bounds())
	for yy := r.Min.Y; yy < r.Max.Y; yy++ {
		for xx := r.Min.X; xx < r.Max.X; xx++ {
			c.img.SetRGBA(xx, yy, col)
		}
	}
}

func (c *canvas) dashedH(x0, x1, y int, col color.RGBA, thick int) {
	for x := x0; x < x1; x += 12 {
		c.fill(x, y-thick/2, min(7, x1-x), thick, col)
	}
}

// text draws s with its top-left corner at x, y; each font pixel is a
// scale×scale square, and glyphs are one font pixel apart.
func (c *canvas) text(x, y, scale int, col color.RGBA, s string) {
	for _, r := range s {
		for row, bits := range glyph(r) {
			for i, b := range bits {
				if b == '#' {
					c.fill(x+i*scale, y+row*scale, scale, scale, col)
				}
			}
		}
		x += (glyphW + 1) * scale
	}
}

func (c *canvas) textCentered(cx, y, scale int, col color.RGBA, s string) {
	w := len([]rune(strings.TrimSpace(s)))*(glyphW+1)*scale - scale
	c.text(cx-w/2, y, scale, col, s)
}

// textVertical draws s turned a quarter counter-clockwise (reading bottom
// to top), centred on cx, cy.
func (c *canvas) textVertical(cx, cy, scale int, col color.RGBA, s string) {
	length := len([]rune(s))*(glyphW+1)*scale - scale
	y := cy + length/2
	for _, r := range s {
		for row, bits := range glyph(r) {
			for i, b := range bits {
				if b == '#' {
					c.fill(cx+row*scale, y-(i+1)*scale, scale, scale, col)
				}
			}
		}
		y -= (glyphW + 1) * scale
	}
}
