import { execFileSync } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { connect, type PeerCertificate } from "node:tls";

const OPENSSL = "/usr/bin/openssl";

export interface Leaf {
  cert: string;
  key: string;
  /** As Node's getPeerCertificate().serialNumber prints it. */
  serial: string;
}

/** The certificate files a gateway is pointed at, symlinked to a store outside the watched directory. */
export interface CertFiles {
  /** What --tls-cert-file / --tls-key-file name: symlinks in their own directory. */
  live: { cert: string; key: string };
  /** The symlinks' targets; rewriting these is invisible to a watch on live's directory. */
  store: { cert: string; key: string };
}

/**
 * A private CA issuing P-256 server certificates for localhost and 127.0.0.1, with the openssl
 * CLI, in a temp directory that remove() deletes.
 */
export class TestPki {
  readonly dir = mkdtempSync(path.join(tmpdir(), "natsedge-tls-"));
  readonly caFile = path.join(this.dir, "ca.pem");
  readonly ca: Buffer;
  private readonly caKey = path.join(this.dir, "ca.key");
  private readonly extFile = path.join(this.dir, "server.ext");
  private issued = 0;
  private copies = 0;

  constructor() {
    writeFileSync(this.extFile, "subjectAltName=DNS:localhost,IP:127.0.0.1\n");
    openssl(["req", "-x509", ...EC_KEY, "-keyout", this.caKey, "-out", this.caFile, "-days", "2", "-subj", "/CN=natsedge test CA"]);
    this.ca = readFileSync(this.caFile);
  }

  /** A new server certificate (a new key, serial and subject each time). */
  issue(): Leaf {
    const n = ++this.issued;
    const base = path.join(this.dir, `server${n}`);
    const [cert, key, csr] = [`${base}.pem`, `${base}.key`, `${base}.csr`];
    openssl(["req", ...EC_KEY, "-keyout", key, "-out", csr, "-subj", `/CN=localhost server ${n}`]);
    openssl(
      ["x509", "-req", "-in", csr, "-CA", this.caFile, "-CAkey", this.caKey, "-set_serial", String(0x5000 + n)]
        .concat(["-days", "2", "-extfile", this.extFile, "-out", cert]),
    );
    return { cert, key, serial: new X509Certificate(readFileSync(cert)).serialNumber };
  }

  /** A fresh directory pair serving `leaf`; see CertFiles. */
  files(leaf: Leaf): CertFiles {
    const root = path.join(this.dir, `files${++this.copies}`);
    const live = { cert: path.join(root, "live", "cert.pem"), key: path.join(root, "live", "key.pem") };
    const store = { cert: path.join(root, "store", "cert.pem"), key: path.join(root, "store", "key.pem") };
    for (const d of ["live", "store"]) mkdirSync(path.join(root, d), { recursive: true });
    copyFileSync(leaf.cert, store.cert);
    copyFileSync(leaf.key, store.key);
    symlinkSync(store.cert, live.cert);
    symlinkSync(store.key, live.key);
    return { live, store };
  }

  remove(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}

const EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];

function openssl(args: string[]): void {
  execFileSync(OPENSSL, args, { stdio: ["ignore", "ignore", "pipe"], timeout: 10_000 });
}

/**
 * The certificate a new TLS connection to 127.0.0.1:port is served. Without `servername` no SNI is
 * sent (as for any client dialling an IP address).
 */
export function servedCertificate(port: number, ca: Buffer, servername?: string): Promise<PeerCertificate> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: "127.0.0.1", port, ca, ...(servername === undefined ? {} : { servername }) }, () => {
      resolve(socket.getPeerCertificate());
      socket.destroy();
    });
    socket.setTimeout(10_000, () => socket.destroy(new Error("TLS handshake timed out")));
    socket.once("error", reject);
  });
}
