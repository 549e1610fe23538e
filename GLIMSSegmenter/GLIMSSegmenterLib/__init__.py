"""The substance of the GLIMSSegmenter Slicer module, free of Qt so that it runs on the slicer-core wheel too.

* ``logic``: ``GLIMSSegmenterLogic`` (segment, export, results in the scene);
* ``job`` / ``process`` / ``engine``: the engine run in a background process, progress and cancel;
* ``sceneio``: volumes to files, the engine's segmentation into the scene, exports; ``exportnames``: safe,
  unique file names from segment names;
* ``finetuning``: ``FineTuningLogic`` (training set, fine-tuning in the background, switching to the new model);
  ``trainingset``: a corrected segmentation and its volumes as a training case; ``trainingplot``: the live
  loss/Dice plot nodes;
* ``parameters``: the parameter node; ``models``: the model catalog and user models;
* ``dependencies``: Python packages needed in Slicer; ``devices``: compute devices;
* ``presentation``: the texts and states the panel shows.
"""
