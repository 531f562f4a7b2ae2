%% The hs_rel application of the release-upgrade benchmark: its callback module and its
%% supervisors.  The top supervisor has one simple_one_for_one supervisor per server
%% module, whose child spec lists that module (so release_handler finds the servers).
-module(hs_rel_sup).
-behaviour(application).
-behaviour(supervisor).
-export([start/2, stop/1, init/1, start_link/1]).

start(_Type, _Args) -> supervisor:start_link({local, hs_rel_top}, ?MODULE, top).
stop(_State) -> ok.

start_link(Mod) -> supervisor:start_link({local, Mod}, ?MODULE, {pool, Mod}).

init(top) ->
    Kids = [#{id => M, start => {?MODULE, start_link, [M]}, type => supervisor,
              modules => [?MODULE]}
            || M <- [hs_rel_a, hs_rel_b, hs_rel_c]],
    {ok, {#{strategy => one_for_one, intensity => 10, period => 1}, Kids}};
init({pool, Mod}) ->
    {ok, {#{strategy => simple_one_for_one, intensity => 10, period => 1},
          [#{id => Mod, start => {Mod, start_link, []}, modules => [Mod]}]}}.
