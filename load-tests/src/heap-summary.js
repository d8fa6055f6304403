/**
 * Summarises a V8 .heapsnapshot: self size and count per constructor / node name, largest first.
 * Usage: node src/heap-summary.js <file.heapsnapshot> [--top 30] [--per N]  (--per divides by N, e.g. connections)
 */
import { readFileSync } from "node:fs";

export function heapSummary(file, top = 30) {
  const snap = JSON.parse(readFileSync(file, "utf8"));
  const meta = snap.snapshot.meta;
  const F = meta.node_fields.length;
  const typeNames = meta.node_types[0];
  const iType = meta.node_fields.indexOf("type");
  const iName = meta.node_fields.indexOf("name");
  const iSize = meta.node_fields.indexOf("self_size");
  const nodes = snap.nodes;
  const agg = new Map();
  let total = 0;
  for (let i = 0; i < nodes.length; i += F) {
    const type = typeNames[nodes[i + iType]];
    const size = nodes[i + iSize];
    total += size;
    let name = type === "object" || type === "closure" || type === "native" ? snap.strings[nodes[i + iName]] : `(${type})`;
    if (name.length > 60) name = `${name.slice(0, 57)}...`;
    const key = `${type}:${name}`;
    const a = agg.get(key) ?? { key, count: 0, bytes: 0 };
    a.count++;
    a.bytes += size;
    agg.set(key, a);
  }
  return { totalBytes: total, top: [...agg.values()].sort((a, b) => b.bytes - a.bytes).slice(0, top) };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const args = process.argv.slice(2);
  const opt = (k, d) => (args.includes(k) ? Number(args[args.indexOf(k) + 1]) : d);
  const top = opt("--top", 30);
  const per = opt("--per", 1);
  for (const f of args.filter((a) => a.endsWith(".heapsnapshot"))) {
    const s = heapSummary(f, top);
    console.log(`\n${f}: ${(s.totalBytes / 2 ** 20).toFixed(1)} MiB${per > 1 ? `, ${(s.totalBytes / per).toFixed(0)} B per unit` : ""}`);
    for (const r of s.top) {
      console.log(`${String((r.bytes / 1024).toFixed(0)).padStart(9)} KiB ${String(r.count).padStart(8)}x ${per > 1 ? `${(r.bytes / per).toFixed(0).padStart(6)} B/unit ${(r.count / per).toFixed(2).padStart(6)}/unit ` : ""}${r.key}`);
    }
  }
}
