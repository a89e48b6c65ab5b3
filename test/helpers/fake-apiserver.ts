/** The in-process API server lives in src/k8s/testing (the benchmark uses it too). */
export * from '../../src/k8s/testing/fake-apiserver.js';
