import { createHash, createPrivateKey, X509Certificate, type KeyObject } from "node:crypto";
import { readFileSync } from "node:fs";
import { createSecureContext } from "node:tls";
import { ConfigError, errorText } from "../config/load.js";
import type { ServerTls } from "../config/types.js";

/**
 * The listeners' certificate, checked before uWebSockets.js sees it: uWS only says "App
 * construction failed" for a bad file, and would accept an expired certificate without a word.
 */
export interface Certificate {
  files: ServerTls;
  /** Of both files' bytes: a reload that reads the same bytes has nothing to change. */
  digest: string;
  subject: string;
  serial: string;
  /** SHA-256 of the leaf certificate, as `openssl x509 -fingerprint -sha256` prints it. */
  fingerprint: string;
  notBefore: Date;
  notAfter: Date;
}

/** A certificate or key file that cannot be served; the message names the setting and the file. */
export class CertificateError extends ConfigError {}

type FileKey = "tls.certFile" | "tls.keyFile";

function fault(key: FileKey, file: string, text: string): CertificateError {
  return new CertificateError(`${key} (${file}): ${text}`);
}

function read(key: FileKey, file: string): string {
  try {
    return readFileSync(file, "utf8");
  } catch (error) {
    throw fault(key, file, `cannot be read: ${errorText(error)}`);
  }
}

/** Reads both files and checks that they parse, that the key is the leaf's, and that TLS can use them. */
export function loadCertificate(files: ServerTls): Certificate {
  const certPem = read("tls.certFile", files.certFile);
  const keyPem = read("tls.keyFile", files.keyFile);
  // X509Certificate also parses DER, which uWS (PEM only) would refuse.
  if (!certPem.includes("-----BEGIN CERTIFICATE-----")) {
    throw fault("tls.certFile", files.certFile, "holds no PEM certificate (-----BEGIN CERTIFICATE-----)");
  }
  let leaf: X509Certificate;
  try {
    leaf = new X509Certificate(certPem);
  } catch (error) {
    throw fault("tls.certFile", files.certFile, `is not a valid PEM certificate: ${errorText(error)}`);
  }
  let key: KeyObject;
  try {
    key = createPrivateKey({ key: keyPem, format: "pem" });
  } catch (error) {
    throw fault("tls.keyFile", files.keyFile, `is not an unencrypted PEM private key: ${errorText(error)}`);
  }
  if (!leaf.checkPrivateKey(key)) {
    throw fault("tls.keyFile", files.keyFile, `is not the key of the certificate in tls.certFile (${files.certFile})`);
  }
  try {
    // Parses the whole chain the way a TLS server loads it, intermediates included.
    createSecureContext({ cert: certPem, key: keyPem });
  } catch (error) {
    throw fault("tls.certFile", files.certFile, `cannot be served: ${errorText(error)}`);
  }
  return {
    files,
    digest: createHash("sha256").update(certPem).update("\0").update(keyPem).digest("hex"),
    subject: leaf.subject.replace(/\n/g, ", "),
    serial: leaf.serialNumber,
    fingerprint: leaf.fingerprint256,
    notBefore: new Date(leaf.validFrom),
    notAfter: new Date(leaf.validTo),
  };
}

/** Log fields describing a certificate. */
export function describeCertificate(c: Certificate): Record<string, string> {
  return { subject: c.subject, serial: c.serial, fingerprint: c.fingerprint, notAfter: c.notAfter.toISOString() };
}

/** Why clients would refuse the certificate today, if they would. */
export function validityProblem(c: Certificate, now = new Date()): string | undefined {
  if (now > c.notAfter) return "the tls certificate has expired; clients will refuse it";
  if (now < c.notBefore) return "the tls certificate is not valid yet; clients will refuse it";
  return undefined;
}
