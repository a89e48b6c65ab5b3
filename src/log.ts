/** JSON logs (pino) for operators; one logger, children per component. */
import pino, { type Logger } from 'pino';

export type { Logger };

export function makeLogger(level = process.env.BPFPROXY_LOG_LEVEL ?? 'info'): Logger {
  return pino({
    level,
    base: { component: 'bpfproxy' },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label }) },
  });
}

/** A logger that says nothing (tests, CLI reads). */
export const silentLogger: Logger = pino({ level: 'silent' });
