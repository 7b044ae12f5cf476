// The IDE's code editor: CodeMirror 6 with Python, search, brackets, lint markers.
// Bundled by build.mjs into crates/sluice-ide/assets/editor.js (an ES module the IDE
// imports lazily, so the first screen does not wait for it). The IDE talks to it only
// through createEditor()'s small handle below.
import { EditorState, Compartment } from "@codemirror/state";
import {
  EditorView, keymap, lineNumbers, highlightActiveLine, highlightActiveLineGutter,
  drawSelection, highlightSpecialChars,
} from "@codemirror/view";
import { defaultKeymap, history, historyKeymap, indentWithTab } from "@codemirror/commands";
import { python } from "@codemirror/lang-python";
import {
  syntaxHighlighting, defaultHighlightStyle, indentOnInput, bracketMatching, foldGutter,
} from "@codemirror/language";
import { searchKeymap, highlightSelectionMatches } from "@codemirror/search";
import { closeBrackets, closeBracketsKeymap, autocompletion } from "@codemirror/autocomplete";
import { lintGutter, setDiagnostics } from "@codemirror/lint";

/**
 * Mount an editor in `parent`.
 * opts: { doc, label, onChange(text), keys: [{key, run}] }
 * Returns { get(), set(text), mark(diagnostics), clearMarks(), insert(text), focus(), view }
 * where a diagnostic is { line (1-based), message, severity? }.
 */
export function createEditor(parent, opts = {}) {
  const readOnly = new Compartment();
  const extraKeys = (opts.keys || []).map((k) => ({ key: k.key, run: () => { k.run(); return true; } }));
  const view = new EditorView({
    parent,
    state: EditorState.create({
      doc: opts.doc || "",
      extensions: [
        lineNumbers(), foldGutter(), highlightActiveLineGutter(), highlightSpecialChars(),
        history(), drawSelection(), indentOnInput(), bracketMatching(), closeBrackets(),
        autocompletion(), highlightActiveLine(), highlightSelectionMatches(),
        syntaxHighlighting(defaultHighlightStyle, { fallback: true }),
        python(), lintGutter(),
        keymap.of([...extraKeys, ...closeBracketsKeymap, ...defaultKeymap, ...searchKeymap,
          ...historyKeymap, indentWithTab]),
        readOnly.of(EditorState.readOnly.of(false)),
        EditorView.contentAttributes.of({ "aria-label": opts.label || "Feed code (Python)" }),
        EditorView.updateListener.of((u) => {
          if (u.docChanged && opts.onChange) opts.onChange(u.state.doc.toString());
        }),
        EditorView.theme({ "&": { height: "100%" }, ".cm-scroller": { fontFamily: "var(--mono)" } }),
      ],
    }),
  });
  const handle = {
    view,
    get: () => view.state.doc.toString(),
    set(text) {
      view.dispatch({ changes: { from: 0, to: view.state.doc.length, insert: text } });
      view.dispatch(setDiagnostics(view.state, []));
    },
    /** Error markers at file lines, from deploy validation or a run's traceback. */
    mark(diags) {
      const doc = view.state.doc;
      const out = diags
        .filter((d) => d.line >= 1 && d.line <= doc.lines)
        .map((d) => {
          const l = doc.line(d.line);
          return { from: l.from, to: l.to, severity: d.severity || "error", message: d.message };
        });
      view.dispatch(setDiagnostics(view.state, out));
      if (out.length) view.dispatch({ selection: { anchor: out[0].from }, scrollIntoView: true });
      return out.length;
    },
    clearMarks: () => view.dispatch(setDiagnostics(view.state, [])),
    insert(text) {
      const { from, to } = view.state.selection.main;
      view.dispatch({ changes: { from, to, insert: text }, selection: { anchor: from + text.length } });
      view.focus();
    },
    focus: () => view.focus(),
    setReadOnly: (ro) => view.dispatch({ effects: readOnly.reconfigure(EditorState.readOnly.of(ro)) }),
  };
  return handle;
}
