import { describe, expect, it } from 'vitest';

import schema from '../schema/plugin.json';
import { MAX_INTERVAL, MIN_INTERVAL } from '../src/protocol';
import { DEFAULTS, readSettings } from '../src/settings';

describe('the settings schema', () => {
  it('bounds the panel interval as the protocol does, with the code default', () => {
    const interval = schema.properties.panelInterval;
    expect(interval.minimum).toBe(MIN_INTERVAL);
    expect(interval.maximum).toBe(MAX_INTERVAL);
    expect(interval.default).toBe(DEFAULTS.panelInterval);
  });

  it('has a default for every setting', () => {
    expect(Object.keys(schema.properties).sort()).toEqual(Object.keys(DEFAULTS).sort());
  });
});

describe('readSettings', () => {
  it('reads the interval', () => {
    expect(readSettings({ panelInterval: 5 })).toEqual({ panelInterval: 5 });
  });

  it('clamps it to what a kernel accepts', () => {
    expect(readSettings({ panelInterval: 0.01 }).panelInterval).toBe(MIN_INTERVAL);
    expect(readSettings({ panelInterval: 1e6 }).panelInterval).toBe(MAX_INTERVAL);
  });

  it('falls back to the default', () => {
    expect(readSettings({})).toEqual(DEFAULTS);
    expect(readSettings({ panelInterval: 'fast' })).toEqual(DEFAULTS);
    expect(readSettings({ panelInterval: NaN })).toEqual(DEFAULTS);
  });
});
