/**
 * Label selectors as Kubernetes evaluates them (apimachinery labels.Selector):
 * every requirement must hold; NotIn and DoesNotExist hold for a missing key.
 */
import { labelOf, type LabelRequirement, type LabelSelector, type Labels } from './types.js';

export function requirementMatches(r: LabelRequirement, labels: Labels): boolean {
  const v = labelOf(labels, r.key);
  switch (r.operator) {
    case 'In':
      return v !== undefined && r.values.includes(v);
    case 'NotIn':
      return v === undefined || !r.values.includes(v);
    case 'Exists':
      return v !== undefined;
    case 'DoesNotExist':
      return v === undefined;
  }
}

export function selectorMatches(s: LabelSelector, labels: Labels): boolean {
  for (const r of s.requirements) if (!requirementMatches(r, labels)) return false;
  return true;
}

/** One string per meaning: requirements and values sorted, duplicates dropped. */
export function selectorKey(s: LabelSelector): string {
  const reqs = s.requirements.map((r) => JSON.stringify([r.key, r.operator, [...new Set(r.values)].sort()]));
  return `{${[...new Set(reqs)].sort().join(',')}}`;
}

/** "k=v" of a label, the key of the label index. */
export const labelPair = (k: string, v: string): string => `${k}\u0000${v}`;

/**
 * The pairs one of which a label set must have to match (an In requirement's
 * values), or the keys one of which it must have (Exists), for the narrowest
 * such requirement; undefined when the selector has no positive requirement
 * (only NotIn and DoesNotExist, or none) and every label set is a candidate.
 */
export function selectorCandidates(
  s: LabelSelector,
  countPair: (pair: string) => number,
  countKey: (key: string) => number,
): { pairs: string[] } | { key: string } | undefined {
  let best: { pairs: string[] } | { key: string } | undefined;
  let bestCount = Infinity;
  for (const r of s.requirements) {
    if (r.operator === 'In') {
      const pairs = r.values.map((v) => labelPair(r.key, v));
      const n = pairs.reduce((sum, p) => sum + countPair(p), 0);
      if (n < bestCount) [best, bestCount] = [{ pairs }, n];
    } else if (r.operator === 'Exists') {
      const n = countKey(r.key);
      if (n < bestCount) [best, bestCount] = [{ key: r.key }, n];
    }
  }
  return best;
}

/** For logs and `bpfproxy policy`: "app=web,tier in (a,b),!legacy". */
export function formatSelector(s: LabelSelector): string {
  if (s.requirements.length === 0) return '(all)';
  return s.requirements
    .map((r) => {
      switch (r.operator) {
        case 'In':
          return r.values.length === 1 ? `${r.key}=${r.values[0]}` : `${r.key} in (${r.values.join(',')})`;
        case 'NotIn':
          return `${r.key} notin (${r.values.join(',')})`;
        case 'Exists':
          return r.key;
        case 'DoesNotExist':
          return `!${r.key}`;
      }
    })
    .join(',');
}
