// A small line chart on <canvas>: time on x, one or more series on y.
// Each series is an array of numbers or nulls (gaps), aligned with `times`
// (Unix seconds). The chart scales for the device pixel ratio, draws a grid
// with a "nice" y scale, and a legend. It records how many points it drew in
// the canvas's data-points attribute.
"use strict";

(function () {
  const PADDING = { left: 44, right: 12, top: 26, bottom: 22 };
  const GRID = "rgba(139,152,168,0.15)";
  const AXIS_TEXT = "#8b98a8";
  const FONT = "11px -apple-system, BlinkMacSystemFont, 'Segoe UI', Roboto, sans-serif";

  function niceMax(value) {
    if (!(value > 0)) return 1;
    const exponent = Math.pow(10, Math.floor(Math.log10(value)));
    for (const step of [1, 2, 2.5, 5, 10]) {
      if (value <= step * exponent) return step * exponent;
    }
    return 10 * exponent;
  }

  function formatNumber(value) {
    if (value >= 1e6) return (value / 1e6).toFixed(value >= 1e7 ? 0 : 1) + "M";
    if (value >= 1e3) return (value / 1e3).toFixed(value >= 1e4 ? 0 : 1) + "k";
    if (value >= 10 || value === 0) return String(Math.round(value));
    return value.toFixed(1);
  }

  function formatClock(seconds) {
    const date = new Date(seconds * 1000);
    return date.toTimeString().slice(0, 8);
  }

  class LineChart {
    constructor(canvas, options) {
      this.canvas = canvas;
      this.options = Object.assign({ format: formatNumber, percent: false, fill: true }, options || {});
      this.times = [];
      this.series = [];
      this.canvas.dataset.points = "0";
    }

    // series: [{name, color, values}]
    setData(times, series) {
      this.times = times;
      this.series = series;
      this.draw();
    }

    draw() {
      const canvas = this.canvas;
      const ratio = window.devicePixelRatio || 1;
      const width = canvas.clientWidth;
      const height = canvas.clientHeight;
      if (!width || !height) return;
      if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
        canvas.width = Math.round(width * ratio);
        canvas.height = Math.round(height * ratio);
      }
      const ctx = canvas.getContext("2d");
      ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
      ctx.clearRect(0, 0, width, height);
      ctx.font = FONT;

      const plotWidth = width - PADDING.left - PADDING.right;
      const plotHeight = height - PADDING.top - PADDING.bottom;
      const times = this.times;
      let maxValue = 0;
      let points = 0;
      for (const one of this.series) {
        for (const value of one.values) {
          if (value != null) {
            points += 1;
            if (value > maxValue) maxValue = value;
          }
        }
      }
      let top = niceMax(maxValue);
      if (this.options.percent) top = Math.min(1, Math.max(top, 0.05));
      // Counts (requests in flight) read badly as 0.25 steps: at least 4.
      if (this.options.integer) top = Math.max(top, 4);
      canvas.dataset.points = String(points);

      // Grid and y labels.
      ctx.strokeStyle = GRID;
      ctx.fillStyle = AXIS_TEXT;
      ctx.lineWidth = 1;
      ctx.textAlign = "right";
      ctx.textBaseline = "middle";
      const rows = 4;
      for (let row = 0; row <= rows; row++) {
        const y = PADDING.top + plotHeight - (plotHeight * row) / rows;
        ctx.beginPath();
        ctx.moveTo(PADDING.left, Math.round(y) + 0.5);
        ctx.lineTo(PADDING.left + plotWidth, Math.round(y) + 0.5);
        ctx.stroke();
        const value = (top * row) / rows;
        const label = this.options.percent ? Math.round(value * 100) + "%" : this.options.format(value);
        ctx.fillText(label, PADDING.left - 6, y);
      }

      // x labels: first, middle, last.
      if (times.length > 1) {
        const start = times[0];
        const end = times[times.length - 1];
        const span = Math.max(1, end - start);
        const xOf = (t) => PADDING.left + ((t - start) / span) * plotWidth;
        ctx.textBaseline = "top";
        ctx.textAlign = "left";
        ctx.fillText(formatClock(start), PADDING.left, height - PADDING.bottom + 6);
        ctx.textAlign = "right";
        ctx.fillText(formatClock(end), PADDING.left + plotWidth, height - PADDING.bottom + 6);

        for (const one of this.series) {
          this.drawSeries(ctx, one, xOf, top, plotHeight);
        }
      } else {
        ctx.textAlign = "center";
        ctx.textBaseline = "middle";
        ctx.fillText("waiting for data", PADDING.left + plotWidth / 2, PADDING.top + plotHeight / 2);
      }

      this.drawLegend(ctx, width);
    }

    drawSeries(ctx, one, xOf, top, plotHeight) {
      const yOf = (value) => PADDING.top + plotHeight - (value / top) * plotHeight;
      const times = this.times;
      ctx.strokeStyle = one.color;
      ctx.lineWidth = 1.6;
      ctx.lineJoin = "round";
      let open = false;
      let firstX = null;
      let lastX = null;
      const dots = [];
      ctx.beginPath();
      for (let index = 0; index < times.length; index++) {
        const value = one.values[index];
        if (value == null) {
          open = false;
          continue;
        }
        const x = xOf(times[index]);
        const y = yOf(value);
        const previous = index > 0 ? one.values[index - 1] : null;
        const next = index + 1 < times.length ? one.values[index + 1] : null;
        // A point with no neighbour draws no line: mark it with a dot.
        if (previous == null && next == null) dots.push([x, y]);
        if (!open) {
          ctx.moveTo(x, y);
          open = true;
        } else {
          ctx.lineTo(x, y);
        }
        if (firstX === null) firstX = x;
        lastX = x;
      }
      ctx.stroke();
      ctx.fillStyle = one.color;
      for (const [x, y] of dots) {
        ctx.beginPath();
        ctx.arc(x, y, 2.5, 0, 2 * Math.PI);
        ctx.fill();
      }

      // A soft fill under single-series charts reads better at a glance.
      if (this.options.fill && this.series.length === 1 && firstX !== null) {
        ctx.lineTo(lastX, PADDING.top + plotHeight);
        ctx.lineTo(firstX, PADDING.top + plotHeight);
        ctx.closePath();
        ctx.globalAlpha = 0.12;
        ctx.fillStyle = one.color;
        ctx.fill();
        ctx.globalAlpha = 1;
      }
    }

    drawLegend(ctx, width) {
      ctx.textBaseline = "middle";
      ctx.textAlign = "left";
      let x = PADDING.left;
      const y = 12;
      for (const one of this.series) {
        const label = one.name;
        const labelWidth = ctx.measureText(label).width;
        if (x + labelWidth + 18 > width - PADDING.right) break;
        ctx.fillStyle = one.color;
        ctx.fillRect(x, y - 4, 10, 8);
        ctx.fillStyle = AXIS_TEXT;
        ctx.fillText(label, x + 14, y);
        x += labelWidth + 28;
      }
    }
  }

  window.LineChart = LineChart;
  window.formatNumber = formatNumber;
})();
