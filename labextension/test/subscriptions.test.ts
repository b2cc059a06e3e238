import { describe, expect, it } from 'vitest';

import type { IKernelEntry } from '../src/comm';
import { kernelToStop, subscriptionFor } from '../src/subscriptions';
import { run, status } from './fixtures';

describe('subscriptionFor', () => {
  const base = { panelVisible: false, panelInterval: 2.5, statusItem: true, currentId: 'a' };

  it('asks every kernel for the interval while the panel shows', () => {
    const context = { ...base, panelVisible: true };
    expect(subscriptionFor('a', context)).toBe(2.5);
    expect(subscriptionFor('b', context)).toBe(2.5);
  });

  it('asks only the current kernel for events while it is hidden', () => {
    expect(subscriptionFor('a', base)).toBeNull();
    expect(subscriptionFor('b', base)).toBe('off');
  });

  it('asks for nothing without a status-bar item', () => {
    expect(subscriptionFor('a', { ...base, statusItem: false })).toBe('off');
  });
});

function entry(id: string, runStatus: string | null): IKernelEntry {
  return {
    id,
    version: '0.1.0',
    status: status({ run: runStatus === null ? null : run({ status: runStatus }) }),
    subscription: null,
    paths: new Set(),
    connections: []
  };
}

describe('kernelToStop', () => {
  it('is the current kernel when it loaded torchmagic', () => {
    expect(kernelToStop('a', [entry('b', 'running')])).toBe('a');
  });

  it('is otherwise the only kernel that is training', () => {
    expect(kernelToStop(undefined, [entry('a', 'completed'), entry('b', 'running')])).toBe('b');
    expect(kernelToStop(undefined, [entry('a', 'running'), entry('b', 'running')])).toBeUndefined();
    expect(kernelToStop(undefined, [entry('a', null)])).toBeUndefined();
  });
});
