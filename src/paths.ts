/** Where the agent is installed: the repository checkout, or /opt/bpfproxy in the image. */
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** dist/src/paths.js -> the installation root (holds bpf/.output and build/Release). */
export const INSTALL_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
