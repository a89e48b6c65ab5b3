/**
 * kube-proxy's rules for the side-by-side benchmark: the generator lives in
 * testkit/kube-proxy/rules.ts, which the lab's kube-proxy stand-in uses too.
 */
export * from '../testkit/kube-proxy/rules.js';
export type { ServicePort as BenchService } from '../testkit/kube-proxy/rules.js';
