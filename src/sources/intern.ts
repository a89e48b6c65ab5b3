/**
 * One copy of the strings many objects repeat (node names, namespaces,
 * port names): 100,000 endpoints on 50 nodes hold 50 node-name strings,
 * not 100,000. The table is bounded: when full it starts over (objects
 * keep the strings they have; later ones share the new table's), so names
 * that come and go cannot grow it.
 */
const MAX_ENTRIES = 4096;
let table = new Map<string, string>();

export function intern(s: string): string {
  const v = table.get(s);
  if (v !== undefined) return v;
  if (table.size >= MAX_ENTRIES) table = new Map();
  table.set(s, s);
  return s;
}
