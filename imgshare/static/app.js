/* IMGSHARE pages: optional comforts only.  Every page works without this file.
   It adds copy buttons, a confirm() before destructive forms, drag-and-drop and
   a progress bar per file for uploads, and loads thumbnails still being made.
   Loaded from /static/ (CSP: script-src 'self'); no inline handlers. */
(function () {
  "use strict";

  var UPLOADS_AT_ONCE = 3;

  function each(selector, fn, root) {
    Array.prototype.forEach.call((root || document).querySelectorAll(selector), fn);
  }

  /* ------------------------------------------------------------ copying */

  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text);
    }
    return new Promise(function (resolve, reject) {
      var area = document.createElement("textarea");
      area.value = text;
      area.setAttribute("readonly", "");
      area.className = "visually-hidden";
      document.body.appendChild(area);
      area.select();
      try {
        if (document.execCommand("copy")) { resolve(); } else { reject(new Error("copy refused")); }
      } catch (e) {
        reject(e);
      } finally {
        document.body.removeChild(area);
      }
    });
  }

  function showDone(button, text) {
    var label = button.textContent;
    button.textContent = text;
    button.classList.add("done");
    window.setTimeout(function () {
      button.textContent = label;
      button.classList.remove("done");
    }, 1600);
  }

  each("button.copy", function (button) {
    button.hidden = false;
    button.addEventListener("click", function () {
      copyText(button.getAttribute("data-copy")).then(
        function () { showDone(button, "Copied"); },
        function () { showDone(button, "Select and copy"); }
      );
    });
  });

  /* ------------------------------------------------------- confirmation */

  each("form[data-confirm]", function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.getAttribute("data-confirm"))) {
        event.preventDefault();
        return;
      }
      if (!form.querySelector("input[name=confirm]")) {
        var confirmed = document.createElement("input");
        confirmed.type = "hidden";
        confirmed.name = "confirm";
        confirmed.value = "1";
        form.appendChild(confirmed);
      }
    });
  });

  /* ---------------------------------------------- thumbnails being made */

  each(".pending[data-thumb]", function (placeholder) {
    var tries = 0;
    var card = placeholder.closest(".item");
    var image = new Image();
    image.width = 160;
    image.height = 160;
    image.alt = card ? card.querySelector(".name").textContent : "";
    image.addEventListener("load", function () {
      placeholder.replaceWith(image);
      if (card) { each(".badge", function (badge) { badge.remove(); }, card); }
    });
    image.addEventListener("error", function () {
      tries += 1;
      if (tries < 30) {
        window.setTimeout(function () {
          image.src = placeholder.getAttribute("data-thumb") + "?try=" + tries;
        }, 2000);
      }
    });
    image.src = placeholder.getAttribute("data-thumb");
  });

  /* ------------------------------------------------------------ uploads */

  var form = document.getElementById("upload-form");
  if (!form || !window.FormData || !window.XMLHttpRequest) { return; }
  var input = form.querySelector("input[type=file]");
  var drop = form.querySelector("[data-drop]");
  var list = form.querySelector(".progress-list");
  var maxSize = parseInt(form.getAttribute("data-max-size"), 10) || 0;

  each(".drop-hint", function (hint) { hint.hidden = false; }, form);

  ["dragenter", "dragover"].forEach(function (name) {
    drop.addEventListener(name, function (event) {
      event.preventDefault();
      drop.classList.add("over");
    });
  });
  ["dragleave", "drop"].forEach(function (name) {
    drop.addEventListener(name, function (event) {
      event.preventDefault();
      drop.classList.remove("over");
    });
  });
  drop.addEventListener("drop", function (event) {
    if (event.dataTransfer && event.dataTransfer.files.length) {
      send(event.dataTransfer.files);
    }
  });
  form.addEventListener("submit", function (event) {
    if (!input.files.length) { return; }
    event.preventDefault();
    send(input.files);
  });

  function row(file) {
    var item = document.createElement("li");
    var name = document.createElement("span");
    var state = document.createElement("span");
    var bar = document.createElement("progress");
    name.className = "file";
    name.textContent = file.name;
    state.className = "state";
    state.textContent = "waiting";
    bar.max = file.size || 1;
    bar.value = 0;
    item.appendChild(name);
    item.appendChild(state);
    item.appendChild(bar);
    list.appendChild(item);
    return { item: item, state: state, bar: bar };
  }

  function finish(shown, ok, text) {
    shown.item.classList.add(ok ? "ok" : "failed");
    shown.state.textContent = text;
    if (ok) { shown.bar.value = shown.bar.max; }
  }

  function send(files) {
    var queue = [];
    var running = 0;
    var left = files.length;
    var failed = 0;
    list.hidden = false;
    list.textContent = "";

    Array.prototype.forEach.call(files, function (file) {
      var shown = row(file);
      if (maxSize && file.size > maxSize) {
        failed += 1;
        left -= 1;
        finish(shown, false, "too large: the limit is " + Math.floor(maxSize / 1048576) + " MiB");
        return;
      }
      queue.push({ file: file, shown: shown });
    });
    if (!left) { after(); return; }
    for (var i = 0; i < UPLOADS_AT_ONCE; i += 1) { next(); }

    function next() {
      var job = queue.shift();
      if (!job) { return; }
      running += 1;
      upload(job.file, job.shown, function (ok) {
        running -= 1;
        left -= 1;
        if (!ok) { failed += 1; }
        if (left === 0) { after(); } else { next(); }
      });
    }

    function after() {
      if (failed === 0) {
        window.location.assign("/images");
        return;
      }
      var item = document.createElement("li");
      var link = document.createElement("a");
      item.className = "after";
      link.href = "/images";
      link.textContent = "Show my images";
      item.appendChild(link);
      list.appendChild(item);
    }
  }

  function upload(file, shown, done) {
    var data = new FormData();
    data.append("csrf", form.elements.csrf.value);
    data.append("expire", form.elements.expire.value);
    if (form.elements.keep_name.checked) { data.append("keep_name", "1"); }
    data.append("file", file, file.name);

    var request = new XMLHttpRequest();
    request.open("POST", form.getAttribute("action"));
    request.setRequestHeader("Accept", "application/json");
    request.upload.addEventListener("progress", function (event) {
      if (event.lengthComputable) {
        shown.bar.max = event.total;
        shown.bar.value = event.loaded;
        shown.state.textContent = Math.floor(100 * event.loaded / event.total) + "%";
      }
    });
    request.addEventListener("load", function () {
      var answer = null;
      try { answer = JSON.parse(request.responseText); } catch (e) { answer = null; }
      if (request.status === 200 && answer && answer.results && answer.results[0].ok) {
        finish(shown, true, "stored as " + answer.results[0].name);
        done(true);
      } else {
        finish(shown, false, (answer && answer.error) || "failed (HTTP " + request.status + ")");
        done(false);
      }
    });
    request.addEventListener("error", function () {
      finish(shown, false, "failed: the connection was closed (too large?)");
      done(false);
    });
    shown.state.textContent = "0%";
    request.send(data);
  }
}());
