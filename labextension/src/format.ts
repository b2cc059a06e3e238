/** Bytes, durations and numbers for people (the same rules as torchmagic/core/formatting.py). */

export function nbytes(n: number | null | undefined): string {
  if (n === null || n === undefined || !Number.isFinite(n)) {
    return '–';
  }
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = n;
  for (const unit of units) {
    if (Math.abs(value) < 1024 || unit === 'TiB') {
      return unit === 'B' ? `${value.toFixed(0)} B` : `${value.toFixed(1)} ${unit}`;
    }
    value /= 1024;
  }
  return `${value.toFixed(1)} TiB`;
}

export function signedBytes(n: number | null | undefined): string {
  if (n === null || n === undefined) {
    return '–';
  }
  return (n > 0 ? '+' : '') + nbytes(n);
}

export function duration(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) {
    return '?';
  }
  const s = Math.max(0, seconds);
  if (s < 60) {
    return `${s.toFixed(1)}s`;
  }
  const total = Math.round(s);
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const rest = String(total % 60).padStart(2, '0');
  return h ? `${h}:${String(m).padStart(2, '0')}:${rest}` : `${m}:${rest}`;
}

export function number(x: number | null | undefined, digits = 4): string {
  if (x === null || x === undefined) {
    return '–';
  }
  if (x === 0) {
    return '0';
  }
  if (Math.abs(x) >= 1e5 || Math.abs(x) < 1e-3) {
    return x.toExponential(digits - 1);
  }
  return String(Number(x.toPrecision(digits)));
}
