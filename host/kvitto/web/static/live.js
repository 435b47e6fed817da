// The day board's live updates: the server sends `changed` (server-sent events) when the
// collector stores a new event; the board is then fetched again. The page works without this.
(function () {
  "use strict";
  var status = document.getElementById("live-status");
  var board = document.getElementById("board");
  if (!status || !board || !window.EventSource) { return; }
  var source = new EventSource(status.dataset.source);
  source.addEventListener("open", function () { status.textContent = status.dataset.on || "Live"; });
  source.addEventListener("changed", function () {
    fetch(status.dataset.board, { credentials: "same-origin" })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) {
        if (html === null) { return; }
        var parsed = new DOMParser().parseFromString(html, "text/html");
        board.replaceChildren.apply(board, Array.prototype.slice.call(parsed.body.childNodes));
        status.textContent = (status.dataset.updated || "Uppdaterad") + " " + new Date().toLocaleTimeString("sv-SE");
      });
  });
})();
