/**
 * The in-process Kubernetes API server for tests and benchmarks; see
 * apiserver/server.ts for what it serves and how faithfully.
 */
export { FakeApiServer, felixCrd, writeKubeconfig, type FakeApiServerOptions, type RequestLog, type Resource } from './apiserver/server.js';
