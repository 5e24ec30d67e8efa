// Collects the errors the page meets — uncaught exceptions, unhandled promise
// rejections and `console.error` calls — in `window.peernotesErrors`, so the
// end-to-end tests can check a run was clean, while the console still shows
// them as usual. Imported first by main.ts.

declare global {
  interface Window {
    peernotesErrors: string[];
  }
}

const MAX_KEPT = 100;

function keep(message: string): void {
  if (window.peernotesErrors.length < MAX_KEPT) window.peernotesErrors.push(message);
}

window.peernotesErrors = [];

window.addEventListener("error", (event) => {
  keep(`uncaught: ${event.message} (${event.filename}:${event.lineno})`);
});

window.addEventListener("unhandledrejection", (event) => {
  const reason: unknown = event.reason;
  keep(`unhandled rejection: ${reason instanceof Error ? reason.message : String(reason)}`);
});

const consoleError = console.error.bind(console);
console.error = (...args: unknown[]): void => {
  keep(args.map((a) => (a instanceof Error ? a.message : String(a))).join(" "));
  consoleError(...args);
};

export {};
