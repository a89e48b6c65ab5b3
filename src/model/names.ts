/**
 * Kubernetes name rules (k8s.io/apimachinery/pkg/util/validation), as the
 * API server applies them to the objects bpfproxy reads. Each check returns
 * why a value is invalid, or undefined when it is valid.
 */

const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS1035_LABEL = /^[a-z]([-a-z0-9]*[a-z0-9])?$/;
const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;

export const LABEL_MAX = 63;
export const SUBDOMAIN_MAX = 253;
export const PORT_NAME_MAX = 15;

/** The value quoted in a message, shortened when it is huge. */
export function quote(v: string, max = 80): string {
  return v.length <= max ? JSON.stringify(v) : `${JSON.stringify(v.slice(0, max))}… (${v.length} characters)`;
}

function check(v: string, max: number, re: RegExp, what: string): string | undefined {
  if (v.length > max) return `must be no more than ${max} characters (${what}); it has ${v.length}`;
  if (!re.test(v)) return `${quote(v)} is not a valid ${what}`;
  return undefined;
}

/** Namespaces, Service and EndpointSlice port names. */
export const dns1123Label = (v: string): string | undefined =>
  check(v, LABEL_MAX, DNS1123_LABEL, 'DNS-1123 label: lower-case letters, digits and "-", starting and ending with a letter or digit');

/** Service names. */
export const dns1035Label = (v: string): string | undefined =>
  check(
    v,
    LABEL_MAX,
    DNS1035_LABEL,
    'DNS-1035 label: lower-case letters, digits and "-", starting with a letter and ending with a letter or digit',
  );

/** EndpointSlice names, node names. */
export const dns1123Subdomain = (v: string): string | undefined =>
  check(v, SUBDOMAIN_MAX, DNS1123_SUBDOMAIN, 'DNS-1123 subdomain: lower-case labels separated by "."');

/** Label values (kubernetes.io/service-name). */
export const labelValue = (v: string): string | undefined =>
  check(v, LABEL_MAX, LABEL_VALUE, 'label value: letters, digits, "-", "_" and ".", starting and ending with a letter or digit');

/** IANA_SVC_NAME: a named targetPort (a container port name). */
export function ianaSvcName(v: string): string | undefined {
  if (v.length > PORT_NAME_MAX) return `must be no more than ${PORT_NAME_MAX} characters (a container port name); it has ${v.length}`;
  if (!/^[-a-z0-9]+$/.test(v)) return `${quote(v)} may contain only lower-case letters, digits and "-" (a container port name)`;
  if (!/[a-z]/.test(v)) return `${quote(v)} must contain at least one letter (a container port name)`;
  if (v.includes('--')) return `${quote(v)} must not contain "--" (a container port name)`;
  if (v.startsWith('-') || v.endsWith('-')) return `${quote(v)} must not begin or end with "-" (a container port name)`;
  return undefined;
}
