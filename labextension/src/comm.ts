/**
 * The `torchmagic` comm target, registered on every kernel connection of notebooks and
 * consoles. The kernel opens it with a hello; the front end answers with its own version.
 */

import { ISessionContext } from '@jupyterlab/apputils';
import { Kernel, KernelMessage } from '@jupyterlab/services';
import { ISignal, Signal } from '@lumino/signaling';

import { COMM_TARGET, HELLO, HelloMessage, isHelloMessage, messageKind } from './protocol';

export interface IHelloEvent {
  kernel: Kernel.IKernelConnection;
  kernelVersion: string;
}

export class CommRegistry {
  constructor(private readonly _version: string) {}

  /** Emitted when a kernel says hello. */
  get helloReceived(): ISignal<this, IHelloEvent> {
    return this._helloReceived;
  }

  /** Kernels that said hello, by kernel id. */
  readonly kernels = new Map<string, string>();

  /** Registers the comm target on the session's current and future kernel connections. */
  watch(sessionContext: ISessionContext): void {
    if (this._contexts.has(sessionContext)) {
      return;
    }
    this._contexts.add(sessionContext);
    const register = (): void => {
      const kernel = sessionContext.session?.kernel;
      if (kernel) {
        this.register(kernel);
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

  register(kernel: Kernel.IKernelConnection): void {
    if (this._connections.has(kernel) || kernel.isDisposed) {
      return;
    }
    this._connections.add(kernel);
    kernel.registerCommTarget(COMM_TARGET, (comm, openMsg) =>
      this._onOpen(kernel, comm, openMsg)
    );
  }

  private _onOpen(
    kernel: Kernel.IKernelConnection,
    comm: Kernel.IComm,
    openMsg: KernelMessage.ICommOpenMsg
  ): void {
    comm.onMsg = msg => this._onData(kernel, comm, msg.content.data);
    this._onData(kernel, comm, openMsg.content.data);
  }

  private _onData(kernel: Kernel.IKernelConnection, comm: Kernel.IComm, data: unknown): void {
    const kind = messageKind(data);
    if (kind === HELLO && isHelloMessage(data)) {
      this.kernels.set(kernel.id, data.version);
      const reply: HelloMessage = { kind: HELLO, version: this._version };
      if (!comm.isDisposed) {
        comm.send(reply as any);
      }
      this._helloReceived.emit({ kernel, kernelVersion: data.version });
      return;
    }
    console.debug(`torchmagic: ignoring a comm message of kind ${String(kind)}`);
  }

  private _contexts = new WeakSet<ISessionContext>();
  private _connections = new WeakSet<Kernel.IKernelConnection>();
  private _helloReceived = new Signal<this, IHelloEvent>(this);
}
