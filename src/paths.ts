/** Where the agent is installed: the repository checkout, or /opt/bpfproxy in the image. */
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** dist/src/paths.js -> the installation root (holds bpf/.output and build/Release). */
export const INSTALL_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

/**
 * The Node.js flags the agent runs with (the image's ENTRYPOINT; the lab and
 * the benchmarks start it the same way): young-generation semi-spaces of
 * 2 MiB instead of 16, which keeps ~30 MiB less resident at 10K services /
 * 100K endpoints for a little more frequent minor GC.
 */
export const AGENT_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=2'];
