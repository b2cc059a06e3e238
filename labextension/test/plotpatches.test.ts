import { describe, expect, it } from 'vitest';

import { interceptPatches, PatchLog, patchFragment } from '../src/plotpatches';

describe('patchFragment', () => {
  it('reads a JSON part, or a buffer part as its own bytes only', () => {
    expect(patchFragment({ msg: 'patch', payload: '{"msgtype":"PATCH-DOC"}' })).toBe(
      '{"msgtype":"PATCH-DOC"}'
    );
    const whole = new Uint8Array([9, 1, 2, 3, 9]);
    const part = patchFragment({ msg: 'patch' }, [new DataView(whole.buffer, 1, 3)]);
    expect([...new Uint8Array(part as ArrayBuffer)]).toEqual([1, 2, 3]);
    expect(patchFragment({ kind: 'torchmagic.refresh' })).toBeNull();
    expect(patchFragment({ msg: 'patch' })).toBeNull();
  });
});

describe('PatchLog', () => {
  it('keeps fragments until a new baseline, which changes its generation', () => {
    const log = new PatchLog();
    log.record('a');
    log.record('b');
    expect(log.fragments).toEqual(['a', 'b']);
    const generation = log.generation;
    log.clear();
    expect(log.fragments).toEqual([]);
    expect(log.generation).not.toBe(generation);
  });
});

describe('interceptPatches', () => {
  class Model {
    seen: unknown[] = [];
    trigger(event: string, ...args: unknown[]): this {
      this.seen.push([event, ...args]);
      return this;
    }
  }

  it('takes patch messages from the model before any listener, passes the rest, and undoes', () => {
    const model = new Model();
    const taken: unknown[] = [];
    const release = interceptPatches(model, fragment => taken.push(fragment));
    model.trigger('msg:custom', { msg: 'patch', payload: 'header' }, []);
    model.trigger('msg:custom', { other: 1 }, []);
    model.trigger('change:render_bundle');
    expect(taken).toEqual(['header']);
    expect(model.seen).toEqual([['msg:custom', { other: 1 }, []], ['change:render_bundle']]);
    release();
    expect(Object.prototype.hasOwnProperty.call(model, 'trigger')).toBe(false);
    model.trigger('msg:custom', { msg: 'patch', payload: 'again' }, []);
    expect(taken).toEqual(['header']);
  });
});
