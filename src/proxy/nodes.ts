/**
 * The cluster's Nodes, as domain objects (name and IPv4 addresses), from
 * whatever source. What needs other nodes' addresses (traffic to endpoints
 * on other nodes) reads them here.
 */
import { sameData } from '../model/equal.js';
import type { Node } from '../model/types.js';

export class NodeStore {
  private readonly nodes = new Map<string, Node>();

  constructor(
    /** told of each node added, changed or removed */
    private readonly onChange: (name: string) => void = () => undefined,
  ) {}

  /** Record a Node (undefined: deleted). An equal one changes nothing. */
  apply(name: string, node: Node | undefined): void {
    const old = this.nodes.get(name);
    if (node === undefined) {
      if (this.nodes.delete(name)) this.onChange(name);
      return;
    }
    if (old && sameData(old, node)) return;
    this.nodes.set(name, node);
    this.onChange(name);
  }

  get(name: string): Node | undefined {
    return this.nodes.get(name);
  }

  all(): IterableIterator<Node> {
    return this.nodes.values();
  }

  names(): string[] {
    return [...this.nodes.keys()];
  }

  get size(): number {
    return this.nodes.size;
  }
}
