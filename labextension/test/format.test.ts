import { describe, expect, it } from 'vitest';

import { duration, nbytes, number, signedBytes } from '../src/format';

describe('nbytes', () => {
  it.each([
    [0, '0 B'],
    [1023, '1023 B'],
    [1536, '1.5 KiB'],
    [5 * 1024 ** 2, '5.0 MiB'],
    [1024 ** 3, '1.0 GiB'],
    [2 * 1024 ** 5, '2048.0 TiB'],
    [-2048, '-2.0 KiB']
  ])('%d -> %s', (n, text) => {
    expect(nbytes(n)).toBe(text);
  });

  it.each([null, undefined, NaN, Infinity])('%s -> a dash', n => {
    expect(nbytes(n)).toBe('–');
  });
});

describe('signedBytes', () => {
  it('marks growth with a plus', () => {
    expect(signedBytes(2048)).toBe('+2.0 KiB');
    expect(signedBytes(-2048)).toBe('-2.0 KiB');
    expect(signedBytes(0)).toBe('0 B');
    expect(signedBytes(null)).toBe('–');
  });
});

describe('duration', () => {
  it.each([
    [5, '5.0s'],
    [59.94, '59.9s'],
    [-1, '0.0s'],
    [61, '1:01'],
    [3725, '1:02:05'],
    [null, '?'],
    [NaN, '?']
  ])('%s -> %s', (seconds, text) => {
    expect(duration(seconds)).toBe(text);
  });
});

describe('number', () => {
  it.each([
    [0, '0'],
    [12.34567, '12.35'],
    [0.5, '0.5'],
    [1e6, '1.000e+6'],
    [0.0001, '1.000e-4'],
    [null, '–']
  ])('%s -> %s', (x, text) => {
    expect(number(x)).toBe(text);
  });

  it('takes the number of digits', () => {
    expect(number(3.14159, 2)).toBe('3.1');
  });
});
