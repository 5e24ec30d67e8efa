// Building DOM from data: elements whose text is always set as text (never parsed
// as HTML, since note text and member names come from other devices), and
// typed look-ups of the static elements index.html declares. No state.

/** What `h` may set on an element besides its children. */
export interface Props {
  id?: string;
  class?: string;
  title?: string;
  /** Other attributes (aria-*, role, data-*, type...), set verbatim. */
  attrs?: Record<string, string>;
}

/** A new `<tag>` with `props`; string children become text nodes. */
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  props: Props = {},
  ...children: (Node | string)[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  if (props.id !== undefined) el.id = props.id;
  if (props.class !== undefined) el.className = props.class;
  if (props.title !== undefined) el.title = props.title;
  for (const [name, value] of Object.entries(props.attrs ?? {})) el.setAttribute(name, value);
  el.append(...children);
  return el;
}

/** The element index.html declares as `#id`, checked to be of `type`. */
export function byId<T extends HTMLElement>(id: string, type: { new (): T; prototype: T }): T {
  const el = document.getElementById(id);
  if (!(el instanceof type)) throw new Error(`index.html is missing #${id} (a ${type.name})`);
  return el;
}

/** An error (or anything thrown) as a sentence to show a person. */
export function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Copies `text` and says so on `button` for a moment. */
export async function copyWithFeedback(button: HTMLButtonElement, text: string): Promise<void> {
  const label = button.dataset.label ?? button.textContent ?? "";
  button.dataset.label = label;
  try {
    await navigator.clipboard.writeText(text);
    button.textContent = "Copied";
  } catch {
    button.textContent = "Copy failed";
  }
  window.setTimeout(() => (button.textContent = label), 1500);
}

const SVG = "http://www.w3.org/2000/svg";

/** A reference to one of index.html's icon symbols (`#i-…`). */
export function svgIcon(symbol: string): SVGSVGElement {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("class", "icon");
  svg.setAttribute("aria-hidden", "true");
  const use = document.createElementNS(SVG, "use");
  use.setAttribute("href", `#${symbol}`);
  svg.append(use);
  return svg;
}
