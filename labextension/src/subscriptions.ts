/**
 * Which kernel gets what: the status messages each kernel is asked to send, and the kernel that
 * Stop training interrupts. Pure functions of the registry's state, so they are unit-tested.
 */

import type { IKernelEntry, Subscription } from './comm';

export interface ISubscriptionContext {
  /** Whether the side panel is shown. */
  panelVisible: boolean;
  /** Seconds between status messages while it is (the panelInterval setting). */
  panelInterval: number;
  /** Whether there is a status-bar item to keep current. */
  statusItem: boolean;
  /** The kernel of the notebook or console in front, if it loaded torchmagic. */
  currentId: string | undefined;
}

/**
 * The panel shown costs a status message per interval per kernel; otherwise only the current
 * kernel reports events, for the status-bar item, and the others send nothing.
 */
export function subscriptionFor(id: string, context: ISubscriptionContext): Subscription {
  if (context.panelVisible) {
    return context.panelInterval;
  }
  return context.statusItem && id === context.currentId ? null : 'off';
}

/** The kernel Stop training acts on: the current one, else the only one that is training. */
export function kernelToStop(
  currentId: string | undefined,
  entries: Iterable<IKernelEntry>
): string | undefined {
  if (currentId !== undefined) {
    return currentId;
  }
  const running = [...entries].filter(e => e.status?.run?.status === 'running');
  return running.length === 1 ? running[0].id : undefined;
}
