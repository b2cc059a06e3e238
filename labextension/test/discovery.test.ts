import { PageConfig } from '@jupyterlab/coreutils';
import { describe, expect, it } from 'vitest';

import {
  UNTRACKED_CONTROL_TYPES,
  UNTRACKED_OPTION,
  commIdsIn,
  ignoreControlStatus,
  untrackedWithControl
} from '../src/discovery';

describe('commIdsIn', () => {
  it('lists the comms of the torchmagic target', () => {
    const content = {
      status: 'ok',
      comms: {
        a1: { target_name: 'torchmagic' },
        w1: { target_name: 'jupyter.widget' },
        a2: { target_name: 'torchmagic' }
      }
    };
    expect(commIdsIn(content)).toEqual(['a1', 'a2']);
  });

  it('finds nothing in an error reply or a malformed one', () => {
    expect(commIdsIn({ status: 'error', comms: { a1: { target_name: 'torchmagic' } } })).toEqual(
      []
    );
    expect(commIdsIn({ status: 'ok', comms: [] })).toEqual([]);
    expect(commIdsIn({ status: 'ok', comms: { a1: null, a2: 'torchmagic' } })).toEqual([]);
    expect(commIdsIn(null)).toEqual([]);
    expect(commIdsIn('torchmagic')).toEqual([]);
  });
});

describe('untrackedWithControl', () => {
  it("adds the subshell requests to the server's list, keeping its order", () => {
    const server = JSON.stringify(['comm_info_request', 'debug_request']);
    const value = untrackedWithControl(server);
    expect(value).not.toBeNull();
    const types = JSON.parse(value as string) as string[];
    expect(types.slice(0, 2)).toEqual(['comm_info_request', 'debug_request']);
    expect(types).toEqual(expect.arrayContaining([...UNTRACKED_CONTROL_TYPES]));
    expect(types).toContain('create_subshell_request');
  });

  it('changes nothing when every type is there already', () => {
    const all = JSON.stringify(['status', ...UNTRACKED_CONTROL_TYPES]);
    expect(untrackedWithControl(all)).toBeNull();
  });

  it('starts from an empty list when the option is missing or not a list', () => {
    for (const raw of [undefined, '', 'not json', '{"a": 1}']) {
      expect(JSON.parse(untrackedWithControl(raw) as string)).toEqual([...UNTRACKED_CONTROL_TYPES]);
    }
  });
});

describe('ignoreControlStatus', () => {
  it('sets the page config that kernel connections read, once', () => {
    PageConfig.setOption(UNTRACKED_OPTION, JSON.stringify(['kernel_info_request']));
    ignoreControlStatus();
    const first = PageConfig.getOption(UNTRACKED_OPTION);
    ignoreControlStatus();
    expect(PageConfig.getOption(UNTRACKED_OPTION)).toBe(first);
    expect(JSON.parse(first)).toEqual(['kernel_info_request', ...UNTRACKED_CONTROL_TYPES]);
  });
});
