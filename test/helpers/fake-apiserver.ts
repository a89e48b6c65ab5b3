/** The in-process API server lives in src/k8s/testing (the benchmark uses it too). */
export * from '../../testkit/fake-apiserver.js';
