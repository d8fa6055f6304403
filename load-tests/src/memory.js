/**
 * Memory snapshots of a system: RSS of each SUT process (by role), JS heap of the servers, and
 * the kernel's view (TCP socket memory from /proc/net/sockstat, Slab from /proc/meminfo; both
 * ends of every loopback connection live on this box).
 */
import { readFileSync } from "node:fs";
import { rssBytes, sleep } from "./procs.js";

function kernel() {
  const sockstat = readFileSync("/proc/net/sockstat", "utf8");
  const tcp = /TCP: inuse (\d+) orphan \d+ tw \d+ alloc (\d+) mem (\d+)/u.exec(sockstat);
  const slab = /^Slab:\s+(\d+) kB/mu.exec(readFileSync("/proc/meminfo", "utf8"));
  return {
    tcpInuse: tcp ? Number(tcp[1]) : null,
    tcpMemBytes: tcp ? Number(tcp[3]) * 4096 : null,
    slabBytes: slab ? Number(slab[1]) * 1024 : null,
  };
}

/** RSS by role (summed), heap per server (minimum over `samples` reads, to see past garbage). */
export async function snapshot(sys, { samples = 3, intervalMs = 500 } = {}) {
  const rss = {};
  for (const p of sys.procs) rss[p.role] = (rss[p.role] ?? 0) + (rssBytes(p.entry.pid) ?? 0);
  let heap = null;
  for (let i = 0; i < samples; i++) {
    const h = (await sys.heapBytes()).reduce((a, b) => a + (b ?? 0), 0);
    heap = heap === null ? h : Math.min(heap, h);
    if (i + 1 < samples) await sleep(intervalMs);
  }
  return { rss, heap, kernel: kernel() };
}

/** Per-connection deltas between two snapshots. */
export function perConnection(before, after, n, serverRoles) {
  const d = (a, b) => (a ?? 0) - (b ?? 0);
  const rssServers = serverRoles.reduce((acc, r) => acc + d(after.rss[r], before.rss[r]), 0);
  const rssAll = Object.keys(after.rss).reduce((acc, r) => acc + d(after.rss[r], before.rss[r]), 0);
  return {
    rssPerConn: rssServers / n,
    rssPerConnInclBroker: rssAll / n,
    heapPerConn: d(after.heap, before.heap) / n,
    kernelTcpPerConnPair: d(after.kernel.tcpMemBytes, before.kernel.tcpMemBytes) / n,
    kernelSlabPerConnPair: d(after.kernel.slabBytes, before.kernel.slabBytes) / n,
    rssByRole: Object.fromEntries(Object.keys(after.rss).map((r) => [r, d(after.rss[r], before.rss[r])])),
  };
}
