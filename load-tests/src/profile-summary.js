/**
 * Summarises V8 .cpuprofile files (node --cpu-prof): self time per function, top N, plus the
 * share of (garbage collector), (program) and (idle).
 * Usage: node src/profile-summary.js <file.cpuprofile>... [--top 30]
 */
import { readFileSync } from "node:fs";
import path from "node:path";

export function summarize(file, top = 30) {
  const prof = JSON.parse(readFileSync(file, "utf8"));
  const byId = new Map(prof.nodes.map((n) => [n.id, n]));
  const self = new Map();
  let total = 0;
  prof.samples.forEach((id, i) => {
    const dt = prof.timeDeltas[i] ?? 0;
    total += dt;
    self.set(id, (self.get(id) ?? 0) + dt);
  });
  const byFn = new Map();
  for (const [id, us] of self) {
    const n = byId.get(id);
    const cf = n.callFrame;
    const where = cf.url ? `${path.basename(cf.url)}:${cf.lineNumber + 1}` : "";
    const key = `${cf.functionName || "(anonymous)"} ${where}`.trim();
    byFn.set(key, (byFn.get(key) ?? 0) + us);
  }
  const idle = byFn.get("(idle)") ?? 0;
  const busy = total - idle;
  const rows = [...byFn.entries()]
    .filter(([k]) => k !== "(idle)")
    .sort((a, b) => b[1] - a[1])
    .slice(0, top)
    .map(([k, us]) => ({ fn: k, ms: Math.round(us / 1000), pctOfBusy: Math.round((us / busy) * 1000) / 10 }));
  return { file: path.basename(file), totalMs: Math.round(total / 1000), busyMs: Math.round(busy / 1000), top: rows };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const args = process.argv.slice(2);
  const ti = args.indexOf("--top");
  const top = ti >= 0 ? Number(args[ti + 1]) : 30;
  const files = args.filter((a, i) => !a.startsWith("--") && (ti < 0 || i !== ti + 1));
  for (const f of files) {
    const s = summarize(f, top);
    console.log(`\n${s.file}: ${s.busyMs} ms busy of ${s.totalMs} ms sampled`);
    for (const r of s.top) console.log(`${String(r.pctOfBusy).padStart(6)} %  ${String(r.ms).padStart(7)} ms  ${r.fn}`);
  }
}
