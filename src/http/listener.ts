import { setTimeout as delay } from "node:timers/promises";
import { loadUws, type TemplatedApp, type us_listen_socket } from "../uws.js";
import { CertificateError, type Certificate } from "./tls.js";

/** uSockets listen options: 0 sets SO_REUSEPORT (for port != 0), LIBUS_LISTEN_EXCLUSIVE_PORT (1) does not. */
const SHARED_PORT = 0;
const EXCLUSIVE_PORT = 1;

/**
 * How long a replaced listen socket stays open. Connections that queued on it while the new app
 * was being built (the event loop is busy meanwhile) are accepted in that time; closing it at
 * once would reset them.
 */
const RETIRE_MS = 20;

/** The native listen takes (host, port, options, cb); the bundled typings only declare the form without a host. */
type ListenWithOptions = (
  host: string,
  port: number,
  options: number,
  cb: (socket: us_listen_socket | false) => void,
) => TemplatedApp;

/** uWS calls back before listen returns, so this is synchronous. */
function listenOn(app: TemplatedApp, host: string, port: number, options: number): us_listen_socket | undefined {
  let result: us_listen_socket | undefined;
  (app.listen as unknown as ListenWithOptions).call(app, host, port, options, (socket) => {
    result = socket || undefined;
  });
  return result;
}

export interface ListenerOptions {
  /** For log messages: "client" or "admin". */
  name: string;
  host: string;
  port: number;
  /** Workers share the port on purpose; a single process must not share it by accident. */
  share: boolean;
}

/**
 * One listening port and the uWS app that serves it.
 *
 * uWS fixes an app's default certificate when the app is created, and its SNI contexts
 * (`addServerName`) cannot be replaced safely: `removeServerName` frees the per-name router that
 * keep-alive connections made under that name still use, and clients that send no SNI (any
 * client dialling an IP address) never reach them. So a certificate reload builds a whole new app
 * and listens with it beside the current one (SO_REUSEPORT), then closes the old listen socket:
 * from then on every new connection gets the new certificate, and connections already open stay
 * on the old app, which serves them as before. A TLS listener therefore always holds its port with
 * SO_REUSEPORT, after first binding it exclusively once to prove that no other process has it.
 */
export class Listener {
  private socket: us_listen_socket | undefined;
  /** Replaced sockets still open for RETIRE_MS. */
  private readonly retiring = new Set<us_listen_socket>();
  private bound = 0;

  constructor(
    private readonly options: ListenerOptions,
    /** Registers every route on an app; called once for each app this listener builds. */
    private readonly routes: (app: TemplatedApp) => void,
    private certificate?: Certificate,
  ) {}

  get name(): string {
    return this.options.name;
  }

  /** Listens and returns the port; throws when the port cannot be had. */
  start(): number {
    const { host, port, share } = this.options;
    const app = this.build(this.certificate);
    let bound = port;
    // SO_REUSEPORT is only set for a non-zero port, and a later app can only join a socket that has it.
    if (this.certificate !== undefined && (!share || port === 0)) {
      const probe = listenOn(app, host, port, EXCLUSIVE_PORT);
      if (probe === undefined) throw this.cannotListen(port);
      bound = loadUws().us_socket_local_port(probe);
      loadUws().us_listen_socket_close(probe);
    }
    const reuse = this.certificate !== undefined || share;
    this.socket = listenOn(app, host, bound, reuse ? SHARED_PORT : EXCLUSIVE_PORT);
    if (this.socket === undefined) throw this.cannotListen(bound);
    this.bound = loadUws().us_socket_local_port(this.socket);
    return this.bound;
  }

  /**
   * Serves `certificate` to every new connection once the promise resolves; resolves false when
   * it is the one already served. Throws, changing nothing, when the new app cannot be built or
   * cannot listen.
   */
  async reload(certificate: Certificate): Promise<boolean> {
    const current = this.socket;
    if (this.certificate === undefined || current === undefined) {
      throw new Error("natsedge bug: certificate reload on a listener without TLS or not listening");
    }
    if (certificate.digest === this.certificate.digest) return false;
    const app = this.build(certificate);
    const socket = listenOn(app, this.options.host, this.bound, SHARED_PORT);
    if (socket === undefined) throw this.cannotListen(this.bound);
    this.socket = socket;
    this.certificate = certificate;
    this.retiring.add(current);
    await delay(RETIRE_MS);
    if (this.retiring.delete(current)) loadUws().us_listen_socket_close(current);
    return true;
  }

  /** Stops accepting connections; open ones are left to their owners. */
  close(): void {
    const uws = loadUws();
    for (const socket of [this.socket, ...this.retiring]) if (socket !== undefined) uws.us_listen_socket_close(socket);
    this.retiring.clear();
    this.socket = undefined;
  }

  private build(certificate: Certificate | undefined): TemplatedApp {
    const uws = loadUws();
    let app: TemplatedApp;
    if (certificate === undefined) {
      app = uws.App();
    } else {
      const { certFile, keyFile } = certificate.files;
      try {
        app = uws.SSLApp({ cert_file_name: certFile, key_file_name: keyFile });
      } catch {
        // loadCertificate accepted these files a moment ago: they must have changed since.
        throw new CertificateError(
          `tls.certFile (${certFile}) and tls.keyFile (${keyFile}): uWebSockets.js could not load them; were they rewritten just now?`,
        );
      }
    }
    this.routes(app);
    return app;
  }

  private cannotListen(port: number): Error {
    return new Error(`cannot listen on ${this.options.host}:${port} (in use or not permitted)`);
  }
}
