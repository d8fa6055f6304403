import { watch, type FSWatcher } from "node:fs";
import { dirname } from "node:path";
import { errorText } from "../config/load.js";
import type { ServerTls } from "../config/types.js";
import type { Logger } from "../log.js";
import type { Metrics } from "../metrics.js";
import type { Listener } from "./listener.js";
import { describeCertificate, loadCertificate, validityProblem, type Certificate } from "./tls.js";

/**
 * Renewals write the certificate and the key one after the other; waiting this long after the
 * last change keeps a reload from reading a new certificate with the old key.
 */
const SETTLE_MS = 250;

export type ReloadReason = "SIGHUP" | "file change";

/**
 * Puts a renewed certificate in service without a restart, on SIGHUP and when the files change.
 * The directories are watched, not the files: renewals replace files (a rename, or Kubernetes
 * swapping its `..data` symlink), after which a watch on the old file would stay silent. A
 * certificate that fails validation is logged and counted, and the listeners keep theirs.
 */
export class TlsReloader {
  private readonly watchers: FSWatcher[] = [];
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  private readonly files: ServerTls;

  /** Starts watching; `served` is the certificate the listeners were started with. */
  constructor(
    served: Certificate,
    private readonly listeners: readonly Listener[],
    private readonly metrics: Metrics,
    private readonly log: Logger,
  ) {
    this.files = served.files;
    for (const result of ["ok", "error"]) metrics.tlsReloads.inc({ result }, 0);
    this.announce(served, "serving tls certificate");
    this.watch();
  }

  private watch(): void {
    for (const dir of new Set([dirname(this.files.certFile), dirname(this.files.keyFile)])) {
      const unwatched = (err: unknown): void =>
        this.log.warn({ dir, err }, "cannot watch the tls certificate directory; SIGHUP still reloads");
      try {
        const watcher = watch(dir, { persistent: false }, () => this.settle());
        watcher.on("error", unwatched);
        this.watchers.push(watcher);
      } catch (err) {
        unwatched(err);
      }
    }
  }

  /** Loads the files again and hands a changed, valid certificate to every listener; never rejects. */
  async reload(reason: ReloadReason): Promise<void> {
    if (this.closed) return;
    let next: Certificate;
    try {
      next = loadCertificate(this.files);
    } catch (err) {
      this.failed(reason, err, "all listeners keep the previous certificate");
      return;
    }
    let changed = false;
    for (const listener of this.listeners) {
      try {
        changed = (await listener.reload(next)) || changed;
      } catch (err) {
        this.failed(reason, err, `the ${listener.name} listener keeps the previous certificate`);
        return;
      }
    }
    if (!changed) {
      this.log[reason === "SIGHUP" ? "info" : "debug"]({ reason }, "tls certificate unchanged");
      return;
    }
    this.metrics.tlsReloads.inc({ result: "ok" });
    this.announce(next, "tls certificate reloaded", { reason });
  }

  /** Stops reloading: the listeners are closing. */
  close(): void {
    this.closed = true;
    clearTimeout(this.timer);
    for (const watcher of this.watchers.splice(0)) watcher.close();
  }

  /** Logs the certificate now in service, with a warning when clients would refuse it. */
  private announce(c: Certificate, msg: string, extra: Record<string, string> = {}): void {
    this.log.info({ ...extra, ...describeCertificate(c) }, msg);
    const problem = validityProblem(c);
    if (problem !== undefined) this.log.warn(describeCertificate(c), problem);
  }

  private failed(reason: ReloadReason, err: unknown, outcome: string): void {
    this.metrics.tlsReloads.inc({ result: "error" });
    this.log.error({ reason, error: errorText(err) }, `tls certificate reload failed; ${outcome}`);
  }

  private settle(): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.reload("file change"), SETTLE_MS);
    this.timer.unref();
  }
}
