// Shown instead of a blank page where the dashboard cannot run: a browser without ES modules
// never runs js/main.js, and one too old for the JavaScript main.js is written in fails to load
// it. main.js marks the page as soon as it runs; this classic, deferred script runs after it (or
// after its failure) and, if the mark is missing, says so plainly. Written in the oldest
// JavaScript on purpose: the browsers it is for understand nothing newer.
(function () {
  var root = document.documentElement;
  if (root.getAttribute('data-app') === 'running') return;
  function hide(id) {
    var node = document.getElementById(id);
    if (node) node.style.display = 'none';
  }
  hide('dashboard');
  hide('login');
  hide('conns');
  hide('viewer');
  hide('doorbell-alert');
  var box = document.getElementById('old-browser');
  if (box) {
    box.removeAttribute('hidden');
    box.style.display = 'block';
  }
})();
