/* IMGSHARE pages: optional comforts only.  Every page works without this file.
   It adds copy buttons, a confirm() before destructive forms, the count on
   "Delete selected", drag-and-drop and a progress bar per file for uploads, and
   loads thumbnails still being made.
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

  /* ------------------------------------------- deleting several at once */

  /* The gallery's "Delete selected" says how many are ticked, and waits for one. */
  each("[data-selected-button]", function (button) {
    var form = button.form;
    function boxes() {
      return Array.prototype.filter.call(document.querySelectorAll("input[data-select]"), function (box) {
        return box.form === form;
      });
    }
    function update() {
      var count = boxes().filter(function (box) { return box.checked; }).length;
      button.textContent = count ? "Delete selected (" + count + ")" : "Delete selected";
      button.disabled = count === 0;
    }
    boxes().forEach(function (box) { box.addEventListener("change", update); });
    window.addEventListener("pageshow", update);  // boxes the browser restored on Back
    update();
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
  var select = form.elements.expire;
  var lifetimes = null;
  try { lifetimes = JSON.parse(form.getAttribute("data-lifetimes")); } catch (e) { lifetimes = null; }
  var sending = false;

  each(".drop-hint", function (hint) { hint.hidden = false; }, form);

  /* The whole page takes drops (a file dropped beside the box must not make the
     browser leave the page), and an image pasted from the clipboard is uploaded. */
  var dragging = 0;
  document.addEventListener("dragenter", function (event) {
    if (!hasFiles(event)) { return; }
    event.preventDefault();
    dragging += 1;
    drop.classList.add("over");
  });
  document.addEventListener("dragover", function (event) {
    if (hasFiles(event)) { event.preventDefault(); }
  });
  document.addEventListener("dragleave", function () {
    dragging = Math.max(0, dragging - 1);
    if (!dragging) { drop.classList.remove("over"); }
  });
  document.addEventListener("drop", function (event) {
    if (!hasFiles(event)) { return; }
    event.preventDefault();
    dragging = 0;
    drop.classList.remove("over");
    send(event.dataTransfer.files);
  });
  document.addEventListener("paste", function (event) {
    var items = event.clipboardData ? event.clipboardData.files : null;
    if (items && items.length) {
      event.preventDefault();
      send(items);
    }
  });
  form.addEventListener("submit", function (event) {
    if (!input.files.length) { return; }
    event.preventDefault();
    send(input.files);
  });
  /* Before the upload, each chosen file says what it will get for the lifetime chosen. */
  input.addEventListener("change", preview);
  select.addEventListener("change", function () {
    if (!sending && list.hasAttribute("data-preview")) { preview(); }
  });

  function preview() {
    if (sending) { return; }
    list.textContent = "";
    list.hidden = !input.files.length;
    list.setAttribute("data-preview", "");
    Array.prototype.forEach.call(input.files, function (file) {
      var shown = row(file, false);
      shown.state.textContent = maxSize && file.size > maxSize ? tooLarge()
        : "Ready to upload (" + sizeInWords(file.size) + ").";
    });
  }

  /* What a file of its size gets for the lifetime chosen, as the server decides it
     (the form carries the server's table: per choice, per size tier). */
  function plan(file) {
    if (!lifetimes || !lifetimes.sizes) { return ""; }
    for (var i = 0; i < lifetimes.sizes.length; i += 1) {
      if (file.size <= lifetimes.sizes[i]) {
        var entry = (lifetimes.choices[select.value] || [])[i];
        if (!entry) { return ""; }
        return "Will be kept " + entry[0] + "." + (entry[1] ? " " + entry[1] : "");
      }
    }
    return "";
  }

  /* As the server writes sizes: 532 bytes, 12.4 KiB, 3.1 MiB. */
  function sizeInWords(size) {
    if (size < 1024) { return size === 1 ? "1 byte" : size + " bytes"; }
    var units = ["KiB", "MiB", "GiB"];
    var value = size;
    for (var i = 0; i < units.length; i += 1) {
      value /= 1024;
      if (value < 1024 || i === units.length - 1) { return value.toFixed(1) + " " + units[i]; }
    }
  }

  function tooLarge() {
    return "Too large: the limit is " + Math.floor(maxSize / 1048576) + " MiB.";
  }

  function hasFiles(event) {
    var types = event.dataTransfer ? event.dataTransfer.types : null;
    return !!types && Array.prototype.indexOf.call(types, "Files") >= 0;
  }

  function row(file, sent) {
    var item = document.createElement("li");
    var name = document.createElement("span");
    var state = document.createElement("span");
    var note = document.createElement("span");
    name.className = "file";
    name.textContent = file.name;
    state.className = "state";
    state.textContent = "Waiting.";
    note.className = "note";
    note.textContent = plan(file);
    item.appendChild(name);
    item.appendChild(state);
    item.appendChild(note);
    var shown = { item: item, state: state, note: note, bar: null };
    if (sent) {
      shown.bar = document.createElement("progress");
      shown.bar.max = file.size || 1;
      shown.bar.value = 0;
      shown.bar.setAttribute("aria-label", "Upload of " + file.name);
      item.appendChild(shown.bar);
    }
    list.appendChild(item);
    return shown;
  }

  /* Every message one way: a sentence, capital first, full stop last. */
  function sentence(text) {
    text = String(text).trim();
    if (!text) { return text; }
    text = text.charAt(0).toUpperCase() + text.slice(1);
    return /[.!?]$/.test(text) ? text : text + ".";
  }

  /* A stored file says what it got from the server (its lifetime, and why it is not
     the one chosen); a failed file only why it failed. */
  function finish(shown, ok, text, url, result) {
    shown.item.classList.add(ok ? "ok" : "failed");
    shown.state.textContent = "";
    if (ok && url) {
      shown.state.appendChild(document.createTextNode("Stored as "));
      var link = document.createElement("a");
      link.href = url;
      link.textContent = text;
      shown.state.appendChild(link);
      shown.state.appendChild(document.createTextNode(". " + ((result && result.kept) || "")));
      shown.note.textContent = (result && result.lifetime_note) || "";
      if (result && result.delete_url) {
        var secret = document.createElement("span");
        var remove = document.createElement("a");
        secret.className = "delete-link";
        remove.href = result.delete_url;
        remove.rel = "nofollow";
        remove.textContent = "Secret delete link";
        secret.appendChild(remove);
        secret.appendChild(document.createTextNode(
          " (shown only now: keep it to delete the image without logging in)."));
        shown.item.insertBefore(secret, shown.bar);
      }
    } else {
      shown.state.textContent = sentence(text);
      shown.note.textContent = "";
    }
    if (shown.bar) { shown.bar.remove(); }  // a full bar would read as done
  }

  function send(files) {
    var queue = [];
    var running = 0;
    var left = files.length;
    var failed = 0;
    sending = true;
    list.removeAttribute("data-preview");
    list.hidden = false;
    list.textContent = "";

    Array.prototype.forEach.call(files, function (file) {
      var shown = row(file, true);
      if (maxSize && file.size > maxSize) {
        failed += 1;
        left -= 1;
        finish(shown, false, tooLarge());
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

    /* The results stay, with their links, until dismissed. */
    function after() {
      sending = false;
      var item = document.createElement("li");
      var link = document.createElement("a");
      var dismiss = document.createElement("button");
      item.className = "after";
      link.href = "/images";
      link.textContent = failed ? "Show my images" : "Show them in my images";
      dismiss.type = "button";
      dismiss.className = "small";
      dismiss.textContent = "Dismiss";
      dismiss.addEventListener("click", function () {
        list.textContent = "";
        list.hidden = true;
      });
      item.appendChild(link);
      item.appendChild(dismiss);
      list.appendChild(item);
    }
  }

  function upload(file, shown, done) {
    var data = new FormData();
    data.append("csrf", form.elements.csrf.value);
    data.append("expire", form.elements.expire.value);
    if (form.elements.keep_name.checked) { data.append("keep_name", "1"); }
    if (form.elements.strip_location.checked) { data.append("strip_location", "1"); }
    data.append("file", file, file.name);

    var request = new XMLHttpRequest();
    request.open("POST", form.getAttribute("action"));
    request.setRequestHeader("Accept", "application/json");
    request.upload.addEventListener("progress", function (event) {
      if (event.lengthComputable) {
        shown.bar.max = event.total;
        shown.bar.value = event.loaded;
        shown.percent.textContent = Math.floor(100 * event.loaded / event.total) + "%";
      }
    });
    request.addEventListener("load", function () {
      var answer = null;
      try { answer = JSON.parse(request.responseText); } catch (e) { answer = null; }
      if (request.status === 200 && answer && answer.results && answer.results[0].ok) {
        finish(shown, true, answer.results[0].name, answer.results[0].url, answer.results[0]);
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
    /* The list is a live region: "Uploading" and the result are read out, not every
       percent (the bar carries the value for whoever asks). */
    shown.state.textContent = "Uploading ";  // the plan stays beside it
    shown.percent = document.createElement("span");
    shown.percent.setAttribute("aria-hidden", "true");
    shown.percent.textContent = "0%";
    shown.state.appendChild(shown.percent);
    request.send(data);
  }
}());
