/**
 * Finding kernels that loaded torchmagic before this page did (a reload during a run), and
 * keeping JupyterLab's kernel status honest while a cell runs.
 *
 * The kernel opens the `torchmagic` comm once, at `%load_ext`, towards the page open then. A page
 * loaded later asks the kernel which comms of that target it has: a `comm_info_request` on the
 * control channel, which the messaging spec gives every shell request and which the kernel
 * answers even while a cell runs (on the shell channel the request would wait for the cell).
 * The page then takes the comm over under the same id.
 */

import { PageConfig } from '@jupyterlab/coreutils';
import { Kernel, KernelMessage } from '@jupyterlab/services';

import { COMM_TARGET } from './protocol';

/**
 * Control-channel requests that JupyterLab (4.6) counts as kernel activity. The kernel answers
 * each with busy/idle status messages, also while a cell runs; JupyterLab then shows the kernel
 * idle for the rest of the cell. It creates a subshell per comm target as soon as a comm of a
 * new target opens (torchmagic's at `%load_ext`, ipywidgets' when `%%train` shows its
 * dashboard), so that happens on every first run. The server's own list of such types, which
 * JupyterLab reads from the page config, says it should hold every non-shell message type.
 */
export const UNTRACKED_CONTROL_TYPES: readonly string[] = [
  'create_subshell_request',
  'create_subshell_reply',
  'delete_subshell_request',
  'delete_subshell_reply',
  'list_subshell_request',
  'list_subshell_reply',
  'usage_request',
  'usage_reply'
];

export const UNTRACKED_OPTION = 'untracked_message_types';

/** The page-config value with `UNTRACKED_CONTROL_TYPES` added, or null when it has them all. */
export function untrackedWithControl(raw: string | undefined): string | null {
  let current: unknown;
  try {
    current = raw ? JSON.parse(raw) : [];
  } catch {
    current = [];
  }
  const types = Array.isArray(current) ? current.filter(t => typeof t === 'string') : [];
  const missing = UNTRACKED_CONTROL_TYPES.filter(t => !types.includes(t));
  return missing.length ? JSON.stringify([...types, ...missing]) : null;
}

/** Adds `UNTRACKED_CONTROL_TYPES` to the page config that kernel connections read. */
export function ignoreControlStatus(): void {
  const value = untrackedWithControl(PageConfig.getOption(UNTRACKED_OPTION));
  if (value !== null) {
    PageConfig.setOption(UNTRACKED_OPTION, value);
  }
}

/** The ids of `target` comms in a `comm_info_reply`'s content (none when it is an error). */
export function commIdsIn(content: unknown, target: string = COMM_TARGET): string[] {
  if (typeof content !== 'object' || content === null) {
    return [];
  }
  const { status, comms } = content as { status?: unknown; comms?: unknown };
  if (status !== 'ok' || typeof comms !== 'object' || comms === null || Array.isArray(comms)) {
    return [];
  }
  return Object.entries(comms as Record<string, unknown>)
    .filter(([, info]) => (info as { target_name?: unknown } | null)?.target_name === target)
    .map(([id]) => id);
}

/** The kernel's `torchmagic` comms, asked on the control channel; [] when it cannot answer. */
export async function torchmagicComms(kernel: Kernel.IKernelConnection): Promise<string[]> {
  const request = KernelMessage.createMessage<KernelMessage.ICommInfoRequestMsg>({
    msgType: 'comm_info_request',
    channel: 'shell',
    session: kernel.clientId,
    username: kernel.username,
    content: { target_name: COMM_TARGET }
  });
  const onControl = { ...request, channel: 'control' } as unknown as KernelMessage.IControlMessage;
  try {
    const reply = await kernel.sendControlMessage(onControl, true, true).done;
    return commIdsIn(reply.content);
  } catch (reason) {
    console.debug('torchmagic: the kernel did not list its comms', reason);
    return [];
  }
}

/**
 * Sends `data` on the comm through the kernel's main shell: handled between cells like every
 * request of this comm, whether or not JupyterLab runs the comm's traffic over a subshell (a
 * request handled on a subshell while a cell runs shows the kernel idle, see above).
 */
export function sendOnMainShell(
  kernel: Kernel.IKernelConnection,
  commId: string,
  data: KernelMessage.ICommMsgMsg['content']['data']
): void {
  const message = KernelMessage.createMessage<KernelMessage.ICommMsgMsg<'shell'>>({
    msgType: 'comm_msg',
    channel: 'shell',
    session: kernel.clientId,
    username: kernel.username,
    subshellId: null,
    content: { comm_id: commId, data }
  });
  kernel.sendShellMessage(message, false, true);
}
