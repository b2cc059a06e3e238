/**
 * The `torchmagic` comm target, registered on every kernel connection of notebooks and
 * consoles. A kernel opens it with a hello at `%load_ext torchmagic`; the front end answers with
 * its own version, then tells the kernel which status messages it wants (subscribe /
 * unsubscribe) and keeps the latest status of every such kernel.
 *
 * Kernels that never load torchmagic (or cannot: no torch) never open the comm, so they are
 * never listed. A kernel leaves the list when its comm closes (`%unload_ext`), when it dies or
 * restarts, and when its last connection is disposed.
 *
 * A kernel that loaded torchmagic before this page did (a reload during a run) is found by
 * asking it for its comms of the target on every new connection (see discovery.ts); the page
 * takes such a comm over, and learns the kernel's version from its first status message.
 */

import { ISessionContext } from '@jupyterlab/apputils';
import { Kernel, KernelMessage } from '@jupyterlab/services';
import { ISignal, Signal } from '@lumino/signaling';

import { sendOnMainShell, torchmagicComms } from './discovery';
import {
  COMM_TARGET,
  HELLO,
  HelloMessage,
  STATUS,
  StatusMessage,
  SUBSCRIBE,
  SubscribeMessage,
  UNSUBSCRIBE,
  UnsubscribeMessage,
  isHelloMessage,
  messageKind,
  statusProblem
} from './protocol';

/** What a kernel is asked to send: a period in seconds, events only (null), or nothing. */
export type Subscription = number | null | 'off';

/** What a comm sends: the protocol's interfaces are JSON, but have no index signature. */
type CommData = Parameters<typeof sendOnMainShell>[2];

interface IConnection {
  kernel: Kernel.IKernelConnection;
  comm: Kernel.IComm;
}

/** One kernel that loaded torchmagic. */
export interface IKernelEntry {
  readonly id: string;
  /** The torchmagic version in the kernel; '' until known (a comm found, not said hello on). */
  version: string;
  /** The latest status message, once one came. */
  status: StatusMessage | null;
  /**
   * What the kernel was last asked to send. It says hello in the events-only state; undefined
   * when another page asked last (a comm this page found).
   */
  subscription: Subscription | undefined;
  /** Notebook or console paths that use this kernel. */
  readonly paths: Set<string>;
  /** Open connections with their comm; the first one is used to send. */
  readonly connections: IConnection[];
}

export interface IHelloEvent {
  kernel: Kernel.IKernelConnection;
  kernelVersion: string;
}

const GONE: ReadonlySet<string> = new Set(['dead', 'restarting', 'autorestarting']);

export class CommRegistry {
  constructor(private readonly _version: string) {}

  /** Emitted when a kernel says hello. */
  get helloReceived(): ISignal<this, IHelloEvent> {
    return this._helloReceived;
  }

  /** Emitted when a kernel is added or removed. */
  get kernelsChanged(): ISignal<this, void> {
    return this._kernelsChanged;
  }

  /** Emitted when a kernel's status changed (a new status message, or it left). */
  get statusChanged(): ISignal<this, string> {
    return this._statusChanged;
  }

  /** Kernels that said hello, by kernel id: their torchmagic version. */
  get kernels(): Map<string, string> {
    return new Map([...this._entries].map(([id, entry]) => [id, entry.version]));
  }

  /** Kernels that said hello, by kernel id. */
  get entries(): ReadonlyMap<string, IKernelEntry> {
    return this._entries;
  }

  /** Registers the comm target on the session's current and future kernel connections. */
  watch(sessionContext: ISessionContext): void {
    if (this._contexts.has(sessionContext)) {
      return;
    }
    this._contexts.add(sessionContext);
    const register = (): void => {
      const kernel = sessionContext.session?.kernel;
      if (kernel) {
        this.register(kernel, sessionContext);
      }
    };
    sessionContext.kernelChanged.connect(register);
    sessionContext.sessionChanged.connect(register);
    sessionContext.disposed.connect(() => {
      sessionContext.kernelChanged.disconnect(register);
      sessionContext.sessionChanged.disconnect(register);
    });
    register();
  }

  register(kernel: Kernel.IKernelConnection, sessionContext?: ISessionContext): void {
    if (this._connections.has(kernel) || kernel.isDisposed) {
      return;
    }
    this._connections.add(kernel);
    if (sessionContext) {
      this._sessions.set(kernel, sessionContext);
    }
    kernel.registerCommTarget(COMM_TARGET, (comm, openMsg) => this._onOpen(kernel, comm, openMsg));
    kernel.statusChanged.connect((_, status) => {
      if (GONE.has(status)) {
        this._dropKernel(kernel);
      }
    });
    kernel.disposed.connect(() => this._dropKernel(kernel));
    void this._discover(kernel);
  }

  /** Takes over the kernel's torchmagic comms that no page of this connection knows. */
  private async _discover(kernel: Kernel.IKernelConnection): Promise<void> {
    const ids = await torchmagicComms(kernel);
    for (const id of ids) {
      if (kernel.isDisposed || GONE.has(kernel.status) || kernel.hasComm(id)) {
        continue;
      }
      const comm = kernel.createComm(COMM_TARGET, id);
      this._listen(kernel, comm);
      this._addConnection(kernel, comm, '');
    }
  }

  /** The entry for the kernel of a notebook or console, if that kernel loaded torchmagic. */
  entryFor(sessionContext: ISessionContext | null | undefined): IKernelEntry | undefined {
    const id = sessionContext?.session?.kernel?.id;
    return id ? this._entries.get(id) : undefined;
  }

  /** A label for the kernel: the paths of the documents that use it. */
  label(entry: IKernelEntry): string {
    return entry.paths.size ? [...entry.paths].join(', ') : entry.id.slice(0, 8);
  }

  /** Asks a kernel for the status messages `want` describes; only sends on a change. */
  setSubscription(id: string, want: Subscription): void {
    const entry = this._entries.get(id);
    if (!entry || entry.subscription === want) {
      return;
    }
    const message: SubscribeMessage | UnsubscribeMessage =
      want === 'off' ? { kind: UNSUBSCRIBE } : { kind: SUBSCRIBE, interval: want };
    if (this._send(entry, message)) {
      entry.subscription = want;
    }
  }

  /** Interrupts the kernel: `%%train` then stops after the current step. */
  async interrupt(id: string): Promise<void> {
    const entry = this._entries.get(id);
    const kernel = entry?.connections.find(c => !c.kernel.isDisposed)?.kernel;
    if (!kernel) {
      return;
    }
    const sessionKernel = this._sessions.get(kernel)?.session?.kernel;
    await (sessionKernel ?? kernel).interrupt();
  }

  private _send(entry: IKernelEntry, message: SubscribeMessage | UnsubscribeMessage): boolean {
    for (const { kernel, comm } of entry.connections) {
      if (comm.isDisposed || kernel.isDisposed || GONE.has(kernel.status)) {
        continue;
      }
      try {
        sendOnMainShell(kernel, comm.commId, message as unknown as CommData);
        return true;
      } catch (reason) {
        console.debug('torchmagic: could not send to the kernel', reason);
      }
    }
    return false;
  }

  private _onOpen(
    kernel: Kernel.IKernelConnection,
    comm: Kernel.IComm,
    openMsg: KernelMessage.ICommOpenMsg
  ): void {
    this._listen(kernel, comm);
    this._onData(kernel, comm, openMsg.content.data);
  }

  private _listen(kernel: Kernel.IKernelConnection, comm: Kernel.IComm): void {
    comm.onMsg = msg => this._onData(kernel, comm, msg.content.data);
    comm.onClose = () => this._dropConnection(kernel, comm);
  }

  private _onData(kernel: Kernel.IKernelConnection, comm: Kernel.IComm, data: unknown): void {
    const kind = messageKind(data);
    if (kind === HELLO && isHelloMessage(data)) {
      this._addConnection(kernel, comm, data.version);
      const reply: HelloMessage = { kind: HELLO, version: this._version };
      if (!comm.isDisposed && !kernel.isDisposed) {
        sendOnMainShell(kernel, comm.commId, reply as unknown as CommData);
      }
      this._helloReceived.emit({ kernel, kernelVersion: data.version });
      return;
    }
    if (kind === STATUS) {
      const problem = statusProblem(data);
      const entry = this._entries.get(kernel.id);
      if (problem === null && entry) {
        entry.status = data as StatusMessage;
        entry.version = entry.status.version;
        this._statusChanged.emit(kernel.id);
      } else {
        console.debug(`torchmagic: ignoring a status message: ${problem ?? 'unknown kernel'}`);
      }
      return;
    }
    console.debug(`torchmagic: ignoring a comm message of kind ${String(kind)}`);
  }

  private _addConnection(
    kernel: Kernel.IKernelConnection,
    comm: Kernel.IComm,
    version: string
  ): void {
    let entry = this._entries.get(kernel.id);
    const added = !entry;
    if (!entry) {
      entry = {
        id: kernel.id,
        version,
        status: null,
        subscription: version ? null : undefined,
        paths: new Set(),
        connections: []
      };
      this._entries.set(kernel.id, entry);
    }
    // A hello: the kernel started a publisher afresh, in the events-only state.
    const reset = version !== '' && entry.subscription !== null;
    if (version) {
      entry.version = version;
      entry.subscription = null;
    }
    if (!entry.connections.some(c => c.comm === comm)) {
      entry.connections.push({ kernel, comm });
    }
    const path = this._sessions.get(kernel)?.path;
    if (path) {
      entry.paths.add(path);
    }
    if (added || reset) {
      this._kernelsChanged.emit();
    }
  }

  private _dropConnection(kernel: Kernel.IKernelConnection, comm?: Kernel.IComm): void {
    const entry = this._entries.get(kernel.id);
    if (!entry) {
      return;
    }
    const keep = entry.connections.filter(c => c.kernel !== kernel || (comm && c.comm !== comm));
    entry.connections.splice(0, entry.connections.length, ...keep);
    if (entry.connections.length === 0) {
      this._entries.delete(kernel.id);
      this._kernelsChanged.emit();
      this._statusChanged.emit(kernel.id);
    }
  }

  private _dropKernel(kernel: Kernel.IKernelConnection): void {
    const entry = this._entries.get(kernel.id);
    if (!entry) {
      return;
    }
    if (GONE.has(kernel.status)) {
      // The kernel itself is gone: every connection to it is.
      entry.connections.splice(0, entry.connections.length);
      this._entries.delete(kernel.id);
      this._kernelsChanged.emit();
      this._statusChanged.emit(kernel.id);
      return;
    }
    this._dropConnection(kernel);
  }

  private _contexts = new WeakSet<ISessionContext>();
  private _connections = new WeakSet<Kernel.IKernelConnection>();
  private _sessions = new WeakMap<Kernel.IKernelConnection, ISessionContext>();
  private _entries = new Map<string, IKernelEntry>();
  private _helloReceived = new Signal<this, IHelloEvent>(this);
  private _kernelsChanged = new Signal<this, void>(this);
  private _statusChanged = new Signal<this, string>(this);
}
