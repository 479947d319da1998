// Runs after main.js (or its failure): no mark from main.js means this browser cannot run
// the dashboard: say so. Old JavaScript on purpose (browsers without modules).
(function () {
  if (document.documentElement.getAttribute('data-app') === 'running') return;
  var ids = ['dashboard', 'login', 'conns', 'viewer', 'doorbell-alert'];
  for (var i = 0; i < ids.length; i++) {
    var node = document.getElementById(ids[i]);
    if (node) node.style.display = 'none';
  }
  var box = document.getElementById('old-browser');
  box.removeAttribute('hidden');
  box.style.display = 'block';
})();
